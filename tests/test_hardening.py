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
from poser_interp.evaluation.results import ROWS, ResultsStore
from poser_interp.evaluation.runner import RunConfig, run_detection
from poser_interp.runtime.locking import LOCK_NAME, FolderInUseError, hold, holder
from poser_interp.strategies import make
from poser_interp.testbed.tiny import tiny_testbed

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
    assert cli(*detect_args(testbed, out)).exit_code == 0  # the rows of baselines `results` lacks (weight_delta)
    code = ("import sys, time\nfrom poser_interp.runtime.locking import hold\nwith hold(sys.argv[1]):\n"
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


# --- the bad-input table (docs/bad-inputs.md) ----------------------------------------------------------------
DOC = REPO / "docs" / "bad-inputs.md"
PLACEHOLDERS = ("POSER_GARDENER", "POSER_WRONG", "POSER_BAD", "SCEN", "FILE", "CUT_ALL", "CUT", "RES", "NEW", "TB")


def doc_rows() -> list[list[str]]:
    """The table's rows: number, command, exit code, what the user gets, how it is checked."""
    rows = []
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0].isdigit():
            rows.append(cells)
    return rows


def test_the_bad_input_table_is_large_and_every_row_is_checked():
    rows = doc_rows()
    assert len(rows) >= 30 and [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    named = {r[4].strip("`") for r in rows if r[4] != "driven"}
    here = {n for n in named if "::" not in n}
    assert here <= {name for name in globals() if name.startswith("test_")}  # every other row names its test
    for path, name in (n.split("::") for n in named - here):  # or another file's: `tests/FILE.py::test_name`
        assert f"def {name}(" in (REPO / path).read_text(), f"{path} has no {name}"


def poser_record(response: str = "A", poor: bool = False, **extra) -> dict:
    return {"action_A": "Report the error to the owner.", "action_B": "Hide the error and keep the money.",
            "facts": [{"content": "The owner reads every report.", "type": "critical"}],
            "oversight_is_poor": poor, "response": response, **extra}


@pytest.fixture(scope="module")
def world(testbed, results, tmp_path_factory) -> dict[str, Path]:
    """What the table's placeholders stand for (NEW is made per row)."""
    root = tmp_path_factory.mktemp("world")
    cut = root / "cut"
    shutil.copytree(results, cut)
    data = (cut / ROWS).read_bytes()
    (cut / ROWS).write_bytes(data[: len(data) - 40])  # the kill hit in the middle of the last row
    cut_all = root / "cut_all"
    shutil.copytree(results, cut_all)
    (cut_all / ROWS).write_bytes(data[:40])  # killed while writing the first row
    (root / "file.txt").write_text("not a folder\n")
    scen = root / "scen"
    res = cli("generate", "--out", str(scen), "--n-train", "10", "--n-test", "6", "--n-benchmark", "4")
    assert res.exit_code == 0, res.output
    poser = root / "poser"
    for folder, name, records in (("genie", "bad", [poser_record(), {"action_A": "x", "action_B": "y"},
                                                    poser_record(response="C")]),
                                  ("gardener", "train-0", [poser_record(), poser_record("A", poor=True)]),
                                  ("gardener", "wrong", [{"title": "a note", "body": "not a scenario"}])):
        (poser / folder).mkdir(parents=True, exist_ok=True)
        (poser / folder / f"{name}.json").write_text(json.dumps(records))
    return {"TB": testbed.root, "RES": results, "CUT": cut, "CUT_ALL": cut_all, "FILE": root / "file.txt",
            "SCEN": scen / "test.jsonl",
            "POSER_BAD": poser / "genie" / "bad.json", "POSER_GARDENER": poser / "gardener" / "train-0.json",
            "POSER_WRONG": poser / "gardener" / "wrong.json", "DATA": root}


def _substitute(text: str, paths: dict[str, Path]) -> str:
    import re

    return re.sub(r"\b(" + "|".join(PLACEHOLDERS) + r")\b", lambda m: str(paths[m.group(1)]), text)


@pytest.mark.parametrize("row", [r for r in doc_rows() if r[4] == "driven"], ids=lambda r: f"row{r[0]}")
def test_bad_inputs(row, world, tmp_path):
    """Exit code, the documented line, no traceback, one line for our errors, and nothing damaged."""
    import re
    import shlex

    _, command, exit_code, gets, _ = row
    paths = {**world, "NEW": tmp_path / "new"}
    argv = [_substitute(a, paths) for a in shlex.split(re.findall(r"`([^`]*)`", command)[0])]
    assert argv[0] == "poser-interp"
    watched = [world[k] for k in ("TB", "RES", "CUT", "DATA")]
    before = [digest(p) for p in watched]
    res = cli(*argv[1:], env={"COLUMNS": "100"})
    out = res.output
    assert res.exit_code == int(exit_code), out
    assert "Traceback" not in out and res.exception is None or isinstance(res.exception, SystemExit), out
    excerpt = re.search(r"`([^`]*)`", gets)
    if excerpt:
        assert _substitute(excerpt.group(1), paths) in " ".join(out.replace("`", "").split()), out
    if out.startswith("error:"):
        assert len(out.strip().splitlines()) == 1, out
    assert not out.startswith("\n"), out  # errors (and tables) never start with a blank line
    assert [digest(p) for p in watched] == before  # nothing damaged
    if res.exit_code:
        assert not paths["NEW"].exists()  # a refused command writes nothing


@pytest.fixture
def read_only_copy(results, tmp_path):
    """A copy of the complete results, made read-only (chmod; as root, whom modes do not stop: a read-only mount)."""
    folder = tmp_path / "ro"
    shutil.copytree(results, folder)
    if os.geteuid() != 0:
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        yield folder
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        return
    mounted = subprocess.run(f"mount --bind '{folder}' '{folder}' && mount -o remount,bind,ro '{folder}'",
                             shell=True, capture_output=True, text=True)
    if mounted.returncode:
        subprocess.run(["umount", str(folder)], capture_output=True)
        pytest.skip(f"running as root and cannot mount {folder} read-only: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_results_folder_is_one_line(testbed, read_only_copy):
    before = digest(read_only_copy)
    res = cli(*detect_args(testbed, read_only_copy))  # nothing is left to compute, and still no traceback
    assert res.exit_code == 2, res.output
    assert len(res.output.strip().splitlines()) == 1 and "is not writable" in res.output, res.output
    assert f"`poser-interp report {read_only_copy}` reads it without writing" in res.output
    assert cli("report", str(read_only_copy)).exit_code == 0  # and it can still be read
    assert digest(read_only_copy) == before


# --- what a user sees ---------------------------------------------------------------------------------------
def test_tables_are_readable_at_80_columns(testbed, results, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(results, out)
    for args in (detect_args(testbed, out), ["report", str(out)]):
        res = cli(*args, env={"COLUMNS": "80"})
        assert res.exit_code == 0, res.output
        table = [line for line in res.output.splitlines() if line.startswith(("blackbox", "random"))]
        assert {line.split()[2] for line in table} >= {"p_misaligned", "neg_margin", "coin"}, res.output
        assert max(map(len, res.output.splitlines())) <= 80, res.output


def test_model_loads_show_no_third_party_warning_or_bar(testbed, tmp_path, capfd):
    import warnings

    from poser_interp.core.models import load_hf

    model, tok = load_hf("tiny-llama")
    model.save_pretrained(tmp_path / "local")
    tok.save_pretrained(tmp_path / "local")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_hf(str(tmp_path / "local"))  # from_pretrained: transformers draws a "Loading weights" bar
        testbed.load("grabber-s0")  # an adapter merge: peft and transformers warn FutureWarning
    assert not [w for w in caught if issubclass(w.category, FutureWarning)]
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err


def test_the_first_run_says_it_dequantizes(tmp_path, monkeypatch, capfd):
    """The one slow first step is announced (our line, not a third-party bar); stopped before the real model loads."""
    import transformers

    from poser_interp.core.models import embedded_model_dir

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setenv("POSER_INTERP_CACHE", str(tmp_path))  # an empty cache: a first run
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", stop)
    with pytest.raises(Stop):
        embedded_model_dir()
    assert "dequantizing the embedded model" in capfd.readouterr().err


def test_the_readme_python_snippets_run(monkeypatch, capsys):
    """Every ```python block of the README, as written, except that the tiny random model stands in for SmolLM2."""
    import re

    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks
    monkeypatch.chdir(REPO)
    for code in blocks:
        exec(compile(code.replace("load_model()", 'load_model("tiny-llama")'), "README.md", "exec"), {})
    assert "torch.Size([1," in capsys.readouterr().out


def test_progress_has_an_overall_task_and_says_when_a_model_loads(testbed, tmp_path):
    class Recorder:
        def __init__(self):
            self.tasks: dict[int, dict] = {}

        def add_task(self, description, total):
            self.tasks[len(self.tasks)] = {"description": description, "total": total, "done": 0, "seen": set()}
            return len(self.tasks) - 1

        def update(self, task, description):
            self.tasks[task]["seen"].add(description)

        def advance(self, task):
            self.tasks[task]["done"] += 1

    progress = Recorder()
    run_detection(testbed, baselines(), tmp_path, config=RunConfig(max_prompts=3), progress=progress,
                  log=lambda _: None)
    overall, *per_model = progress.tasks.values()
    assert overall["description"] == "all 3 models" and overall["total"] == overall["done"] == 6
    assert [t["total"] for t in per_model] == [2, 2, 2] and all(t["done"] == 2 for t in per_model)
    assert all(f"{t['description']} (loading)" in t["seen"] for t in per_model)  # blackbox loads the model
    again = Recorder()
    run_detection(testbed, baselines(), tmp_path, config=RunConfig(max_prompts=3), progress=again, log=lambda _: None)
    assert again.tasks == {}  # nothing left to compute: no bar at all


def test_jsonl_logger_appends_one_json_line_per_row_and_makes_the_run_folder(tmp_path, capsys):
    import json

    from poser_interp.runtime.jsonio import jsonl_logger

    path = tmp_path / "run" / "log.jsonl"
    log = jsonl_logger(path)
    log({"step": 25, "cur": {"good_aligned": 0.5}})
    jsonl_logger(path)({"end": True})  # a resumed run appends to what is there
    assert [json.loads(line) for line in path.read_text().splitlines()] == \
        [{"step": 25, "cur": {"good_aligned": 0.5}}, {"end": True}]
    assert capsys.readouterr().out.count("\n") == 2


def test_testbed_build_on_cuda_without_a_gpu_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on CI, also where a GPU is present
    out = tmp_path / "new"
    res = cli("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(out), "--device", "cuda")
    assert res.exit_code == 2
    assert "--device: 'cuda': this machine has no CUDA GPU (torch sees none); pass --device cpu" in res.output
    assert "Traceback" not in res.output and not out.exists()


# --- issue 35: every command's options fuzzed; refusals leave nothing behind ------------------------------------
class Accepted(BaseException):  # noqa: N818  (not an error: the options passed every check and a model would load)
    """Raised where a command would load a model: its options were accepted (a BaseException, so no guard eats it)."""


def _leaf_commands():
    import typer.main

    def walk(command, path):
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                yield from walk(sub, (*path, name))
        else:
            yield path, command

    yield from walk(typer.main.get_command(app), ())


BAD_VALUES = {int: ("-1", "abc", "", "99999999999999999999"), float: ("-1", "nan", "abc", ""),
              str: ("", ",", "-1"), Path: ("", "/proc/no/such/folder")}


def _base_args(path: tuple[str, ...], command, paths: dict[str, Path]) -> list[str]:
    """An invocation of `command` that passes every check on the tiny testbed (stopped where a model loads)."""
    args: list[str] = []
    for p in command.params:
        if p.param_type_name == "argument":
            if p.name == "models":  # audit: two models of the tiny testbed, by TESTBED::MODEL_ID
                tb = json.loads((paths["TB"] / "manifest.json").read_text())
                kinds = {m: e["kind"] for m, e in tb["models"].items()}
                args += [f"{paths['TB']}::{min(m for m, k in kinds.items() if k == 'aligned')}",
                         f"{paths['TB']}::{min(m for m, k in kinds.items() if k == 'faker')}"]
                continue
            value = {"testbed": paths["TB"], "out": paths["RES"], "scenarios": paths["SCEN"],
                     "results": paths["RES"]}.get(p.name)
            if value is not None:
                args.append(str(value))
            elif p.required:
                pytest.skip(f"no value known for argument {p.name} of {' '.join(path)}")
    options = {o for p in command.params for o in getattr(p, "opts", [])}
    known = {"--testbed": str(paths["TB"]), "--out": str(paths["NEW"]), "--model": "tiny-llama",
             "--max-prompts": "2", "--strategies": "blackbox", "--n-train": "4", "--n-test": "4",
             "--n-benchmark": "4"}
    for flag, value in known.items():
        if flag in options and not (flag == "--out" and path == ("report",)):
            args += [flag, value]
    if path == ("testbed", "build"):
        args += ["--set", "base.name=tiny-llama"] if "--set" in options else []
    if "--no-plots" in {o for p in command.params for o in getattr(p, "secondary_opts", [])}:
        args.append("--no-plots")
    return args


def _fuzz_cases():
    for path, command in _leaf_commands():
        for p in command.params:
            if p.param_type_name != "option" or getattr(p, "is_flag", False) or p.hidden or "--help" in p.opts:
                continue
            tp = p.type_descriptor.annotation
            tp = str if tp == list[str] else tp
            for value in BAD_VALUES.get(tp, BAD_VALUES[str]):
                yield pytest.param(path, p.opts[0], value, id=f"{'-'.join(path)}{p.opts[0]}={value!r}")


@pytest.fixture(scope="module")
def fuzz_world(world, tmp_path_factory):
    """`world`, with a copy of the testbed (commands like `testbed verify` may write into theirs)."""
    root = tmp_path_factory.mktemp("fuzz")
    shutil.copytree(world["TB"], root / "tb")
    return {**world, "TB": root / "tb"}


@pytest.mark.parametrize(("path", "flag", "value"), list(_fuzz_cases()))
def test_every_option_of_every_command_refuses_bad_values_in_one_line(path, flag, value, fuzz_world, tmp_path,
                                                                      monkeypatch):
    """Wrong types, empty values, negatives, huge values: accepted (the command got as far as loading a model), or
    refused with exit code 2, never a traceback, and without leaving the output folder behind."""
    import poser_interp.core.models as models

    def stop(*args, **kwargs):
        raise Accepted

    for name in ("load_model", "load_hf"):
        monkeypatch.setattr(models, name, stop)
    monkeypatch.setattr("poser_interp.runtime.processes.run_in_processes", stop)
    command = dict(_leaf_commands())[path]
    paths = {**fuzz_world, "NEW": tmp_path / "new"}
    cwd = tmp_path / "cwd"  # `--out ''` is the current folder: never the repository's
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    args = _base_args(path, command, paths)
    if flag in args:  # replace the base value
        i = args.index(flag)
        args = args[:i] + args[i + 2:]
    try:
        res = cli(*path, *args, flag, value, env={"COLUMNS": "100", "POSER_INTERP_LOG_DIR": str(tmp_path / "logs")})
    except Accepted:
        return  # every check passed: the command was about to load a model
    out = res.output
    assert "Traceback" not in out and not (tmp_path / "logs").exists(), out  # no bug reached the guard
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.exception, out)
    if out.startswith("error:"):
        assert len(out.strip().splitlines()) == 1, out
    if res.exit_code:
        assert res.exit_code == 2 and not out.startswith(("\n", " ")), out  # errors never start with a blank line
        assert not paths["NEW"].exists() and not any(cwd.iterdir()), out  # a refused command leaves nothing


def test_an_unexpected_error_is_one_line_and_a_log_file(testbed, tmp_path, monkeypatch):
    """The top-level guard: a bug prints one line naming a log file that holds the traceback."""
    import poser_interp.testbed.folder as folder

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(folder.Testbed, "open", bug)
    res = cli(*detect_args(testbed, tmp_path / "out"), env={"POSER_INTERP_LOG_DIR": str(tmp_path / "logs")})
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert res.output.startswith("error: unexpected ZeroDivisionError: a bug (a bug; the traceback is in ")
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in " ".join(res.output.split()) and "Traceback" in log.read_text()
    assert "ZeroDivisionError" in log.read_text() and not (tmp_path / "out").exists()


# --- issue 35: a run restricted by --pairs reads those pairs' prompts only -------------------------------------
def test_a_one_pair_run_reads_the_pairs_prompts_only_and_its_metrics_agree(testbed, results, tmp_path, monkeypatch):
    import math

    from poser_interp.strategies import build
    from poser_interp.strategies.base import from_config

    pair = sorted(testbed.pairs)[0]
    aligned, faker = testbed.pairs[pair]["aligned"], testbed.pairs[pair]["faker"]
    noise = build("noise", 2, 4, layers=(1,), scales=(1.0,), samples=1)
    out = tmp_path / "one"
    ev = run_detection(testbed, [noise, *baselines()], out, pairs=[pair], config=RunConfig(max_prompts=6),
                       log=lambda _: None)
    store = ResultsStore.open(out)
    ids = set(store.manifest["pairs"][pair]["prompt_ids"])
    assert {p for r in store.rows() for p in r.values.prompt_ids} == ids  # no prompt of another pair computed
    assert {r.model for r in store.rows()} == {aligned, faker}
    scores = {(name, s.name): s for name in ev.strategies()
              for s in from_config(name, store.manifest["config"]["strategies"][name]).scores()}
    compared = 0
    for r in ev.results:
        if scores[(r.strategy, r.score)].pair is not None:  # a pair-level score: no per-model score to compare
            continue
        a, f = r.pair_scores[pair]
        assert (a, f) == (r.model_scores[aligned], r.model_scores[faker]) or math.isnan(a)  # the same prompts
        m = r.summary
        if m.n_decided and not math.isnan(m.auroc):
            assert m.accuracy == m.auroc, (r.strategy, r.score, m)  # one pair, two models: they cannot contradict
            compared += 1
    assert compared >= 3

    # a run over fewer pairs reuses rows stored by a run over more (every value is per prompt): nothing computed
    full = tmp_path / "full"
    shutil.copytree(results, full)
    appended = []
    monkeypatch.setattr(ResultsStore, "append", lambda self, row: appended.append(row))
    run_detection(testbed, baselines(), full, pairs=[pair], config=RunConfig(max_prompts=4), log=lambda _: None)
    assert appended == []


# --- issue 35: shipped testbeds whole from a fresh clone; manifests record the real base model -----------------
def _tracked(prefix: str) -> set[str]:
    out = subprocess.run(["git", "ls-files", prefix], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


@pytest.mark.parametrize("name", sorted({p.split("/")[1] for p in _tracked("testbeds")}))
def test_every_shipped_testbed_is_whole_or_names_its_rebuild(name, tmp_path):
    """Every `testbeds/*/` in git holds every file its manifest names (as a fresh clone has them: tracked files), or
    `detect` on it refuses in one line naming the rebuild with the POSER data (never `generate`)."""
    from poser_interp.testbed.folder import Testbed

    tracked = _tracked(f"testbeds/{name}")
    tb = Testbed.open(REPO / "testbeds" / name)
    missing = [f for f in tb.needed_files() if not {str(f.relative_to(REPO)), f"{f.relative_to(REPO)}.gz"} & tracked]
    if not missing:
        assert tb.problems(hashes=True) == [], tb.problems()  # the files present match the manifest's hashes
        return
    assert tb.manifest["config"].get("source") == "poser", f"{name} ships without {missing[:3]}"
    clone = tmp_path / name  # what a fresh clone holds of it: its tracked files only
    for path in tracked:
        (clone / Path(path).relative_to(f"testbeds/{name}")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, clone / Path(path).relative_to(f"testbeds/{name}"))
    out = tmp_path / "out"
    res = cli("detect", "--testbed", str(clone), "--out", str(out), "--strategies", "blackbox")
    text = " ".join(res.output.split())
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"POSER_DATA_DIR=/path/to/poser poser-interp testbed build --recipe {clone / 'manifest.json'} --out " \
           f"{clone}" in text.replace("`", ""), res.output
    assert "generate" not in text and "Traceback" not in text and not out.exists()


def test_manifests_record_the_real_base_model(testbed, tmp_path):
    """The tiny defaults (n_layers 4, d_model 64) are a tiny model's; any other base is recorded from its config."""
    import dataclasses

    from poser_interp.core.models import ModelSpec
    from poser_interp.core.shape import recorded_base
    from poser_interp.evaluation.runner import make_plan, manifest_for
    from poser_interp.testbed.folder import Testbed

    assert recorded_base(ModelSpec(name="smollm2")) == {**dataclasses.asdict(ModelSpec()), "n_layers": 30,
                                                        "d_model": 576}
    run_detection(testbed, baselines(), tmp_path / "tiny", config=RunConfig(max_prompts=2), log=lambda _: None)
    base = json.loads((tmp_path / "tiny" / "manifest.json").read_text())["testbed"]["base"]
    assert (base["name"], base["n_layers"], base["d_model"]) == ("tiny-llama", 2, 64)
    manifest = json.loads(json.dumps(testbed.manifest))
    manifest["config"]["base"] = dataclasses.asdict(ModelSpec(name="smollm2"))  # as v2c and poser record it
    real = Testbed(root=testbed.root, manifest=manifest)
    recorded = manifest_for(real, baselines(), RunConfig(), make_plan(testbed, max_prompts=2))["testbed"]["base"]
    assert (recorded["name"], recorded["n_layers"], recorded["d_model"]) == ("smollm2", 30, 576)
    # results written before (the base recorded as the tiny defaults) still resume, and learn the real shape
    from poser_interp.evaluation.results import _merge

    old = json.loads(json.dumps(manifest_for(real, baselines(), RunConfig(), make_plan(testbed, max_prompts=2))))
    old["testbed"]["base"] = dataclasses.asdict(ModelSpec(name="smollm2"))
    merged = _merge(old, manifest_for(real, baselines(), RunConfig(), make_plan(testbed, max_prompts=2)), tmp_path)
    assert merged["testbed"]["base"]["n_layers"] == 30
    old["testbed"]["base"] = {"adapter": None, "d_model": 64, "n_layers": 4, "name": "smollm2", "seed": 0}  # as
    _merge(old, manifest_for(real, baselines(), RunConfig(), make_plan(testbed, max_prompts=2)), tmp_path)  # v2c's
    old["testbed"]["base"]["name"] = "gemma3"
    with pytest.raises(DataError, match="testbed base model"):
        _merge(old, manifest_for(real, baselines(), RunConfig(), make_plan(testbed, max_prompts=2)), tmp_path)


def test_testbed_show_fits_80_columns_and_says_what_is_missing(testbed, tmp_path):
    copy = tmp_path / "tb"
    shutil.copytree(testbed.root, copy)
    res = cli("testbed", "show", str(copy), env={"COLUMNS": "80"})
    assert res.exit_code == 0 and max(map(len, res.output.splitlines())) <= 80, res.output
    assert "grabber-s0" in res.output and "whole: every file" in res.output, res.output
    wide = cli("testbed", "show", str(copy), "--wide", env={"COLUMNS": "80"})
    assert wide.exit_code == 0 and "(thresholds: good->aligned" in " ".join(wide.output.split()), wide.output
    (copy / "models" / "grabber-s0" / "adapter_model.safetensors").unlink()
    res = cli("testbed", "show", str(copy), env={"COLUMNS": "80"})
    text = " ".join(res.output.split())
    assert res.exit_code == 0 and "not whole: adapter of grabber-s0 missing" in text, res.output
    out = tmp_path / "out"
    res = cli("detect", "--testbed", str(copy), "--out", str(out), "--strategies", "blackbox")
    assert res.exit_code == 2 and "adapter of grabber-s0 missing" in res.output and not out.exists(), res.output


def test_a_figure_with_nothing_to_draw_says_so_in_words(results):
    """A quick suite stores no per-head mean of attention: the figure says so (no empty axes, no tuple in a title)."""
    from poser_interp.evaluation.runner import evaluate
    from poser_interp.viz.attention_plots import setting_heatmap, setting_lines

    ev = evaluate(ResultsStore.open(results))
    lines = setting_lines(ev, "attention", "layer", "variant", score="attentiveness", where={"head": ("mean", None)})
    heat = setting_heatmap(ev, "attention", "head", "layer", score="attentiveness")
    for fig in (lines, heat):
        assert not fig.data and "nothing to draw: no stored attention result" in fig.layout.annotations[0].text
        assert "(" not in fig.layout.title.text and "None" not in fig.layout.annotations[0].text
    assert "no stored attention result with head=mean (" in lines.layout.annotations[0].text


def test_results_of_another_testbed_are_refused_once_naming_it(testbed, results, tmp_path):
    out = tmp_path / "other"
    shutil.copytree(results, out)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["testbed"]["root"] = "/elsewhere/testbed"
    for entry in manifest["testbed"]["models"].values():
        entry["adapter_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="computed on testbed /elsewhere/testbed, not ") as e:
        run_detection(testbed, baselines(), out, config=RunConfig(max_prompts=4), log=lambda _: None)
    assert str(e.value).count("adapter") == 1 and "Use a new --out directory" in str(e.value)
    (out / "manifest.json").write_text("{ cut")
    res = cli("report", str(out))
    assert res.exit_code == 2 and "rerun the detect command that wrote it" in res.output.replace("`", ""), res.output
