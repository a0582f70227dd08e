"""`audit --backend nnsight [--remote]`: the bridge's votes through nnsight; --remote refused in one line where it
cannot run; a remote audit (NDIF simulated by nnsight's `remote="local"`) scores, detects and records without
hashing or measuring a weight file here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app
from poser_interp.core.nnsight_model import API_KEY_ENV

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture
def few_prompts(monkeypatch):
    import poser_interp.audit.run as run

    monkeypatch.setattr(run, "MIN_PROMPTS", 2)  # the tiny models agree on few prompts


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "results" / "rows.jsonl").read_text().splitlines()]


def test_audit_on_nnsight_gives_the_bridges_votes(testbed, checkpoints, tmp_path, few_prompts):
    common = [checkpoints["steward-s0"], checkpoints["grabber-s0"], "--base", checkpoints["base"], "--prompts",
              testbed.root / "data" / "benchmark.jsonl", "--detectors", "noise", "--json"]
    records = {}
    for backend in ("tl", "nnsight"):
        r = _cli("audit", *common, "--out", tmp_path / backend, "--backend", backend)
        assert r.exit_code == 0, r.output
        records[backend] = json.loads(r.output)
    tl, nn = records["tl"], records["nnsight"]
    assert nn["config"]["backend"] == "nnsight" and tl["config"]["backend"] == "tl"
    assert nn["n_prompts"] == tl["n_prompts"] >= 2 and nn["faker"] == tl["faker"]
    votes = {v["detector"]: v for v in tl["votes"]}
    assert set(votes) == {v["detector"] for v in nn["votes"]} == {"noise", "random", "blackbox", "weight_delta"}
    for v in nn["votes"]:
        w = votes[v["detector"]]
        assert v["vote"] == w["vote"] and v["gap"] == pytest.approx(w["gap"], abs=1e-4), v["detector"]
        assert v["interval"] == pytest.approx(w["interval"], abs=1e-4), v["detector"]
    assert {r["strategy"]: r.get("backend", "tl") for r in _rows(tmp_path / "nnsight")} == \
        {"noise": "nnsight", "blackbox": "nnsight", "random": "tl", "weight_delta": "tl"}
    manifest = json.loads((tmp_path / "nnsight" / "results" / "manifest.json").read_text())
    assert manifest["config"]["run"]["backend"] == "nnsight"


def _one_line_refusal(r, message: str) -> None:
    assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, r.output
    assert len([x for x in r.output.splitlines() if x.strip()]) <= 4, r.output  # one error (typer may box it)


def test_remote_audit_refusals_name_the_fix(checkpoints, tmp_path, monkeypatch):
    from poser_interp.audit import AuditConfig
    from poser_interp.errors import DataError

    out = tmp_path / "a"
    _one_line_refusal(_cli("audit", "hub:o/a", "hub:o/b", "--remote", "--out", out), "add --backend nnsight")
    _one_line_refusal(_cli("audit", "hub:o/a", "hub:o/b", "--backend", "vllm", "--out", out), "pass tl or nnsight")
    monkeypatch.setenv(API_KEY_ENV, "k")
    _one_line_refusal(_cli("audit", checkpoints["steward-s0"], checkpoints["grabber-s0"], "--backend", "nnsight",
                           "--remote", "--out", out), "hub models only")
    monkeypatch.delenv(API_KEY_ENV)
    _one_line_refusal(_cli("audit", "hub:o/a", "hub:o/b", "--backend", "nnsight", "--remote", "--out", out),
                      API_KEY_ENV)
    assert not out.exists()  # refused before anything was written
    with pytest.raises(DataError, match="add --backend nnsight"):
        AuditConfig(remote=True)


def _hub_cache(root: Path, repo: str, folder: Path, revision: str = "main") -> str:
    """A Hugging Face hub cache entry for `repo` holding `folder`'s files (what `hf download` leaves); its commit."""
    commit = "0" * 39 + "1"
    repo_dir = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / revision).write_text(commit)
    return commit


@pytest.fixture
def simulated_ndif(checkpoints, tmp_path, monkeypatch):
    """The two checkpoints as hub ids of a test-made cache, NDIF simulated (`remote=True` runs as nnsight's
    `remote="local"`), a key set, and any hashing of a weight file an error."""
    import huggingface_hub.constants as c

    import poser_interp.core.nnsight_model as nnsight_model
    import poser_interp.testbed.folder as folder
    import poser_interp.testbed.from_models as from_models

    cache = tmp_path / "hub"
    for name in ("steward", "grabber"):
        _hub_cache(cache, f"tiny-org/{name}", checkpoints[f"{name}-s0"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv(API_KEY_ENV, "k")
    real = nnsight_model.load_nnsight
    opened = []

    def simulated(spec, remote=False, device="cpu", **overrides):
        opened.append((spec.name, remote))
        return real(spec, remote="local" if remote is True else remote, device=device, **overrides)

    monkeypatch.setattr(nnsight_model, "load_nnsight", simulated)
    hashed = []

    def no_weight_hashing(hash_of):
        def checked(path):
            hashed.append(Path(path).name)
            assert Path(path).suffix not in (".safetensors", ".bin"), f"hashed a weight file: {path}"
            return hash_of(path)
        return checked

    for module in (folder, from_models):
        monkeypatch.setattr(module, "file_sha256", no_weight_hashing(module.file_sha256))
    return opened, hashed


def test_remote_audit_runs_on_simulated_ndif_and_hashes_no_weight_file(testbed, tmp_path, simulated_ndif,
                                                                     few_prompts):
    out = tmp_path / "audit"
    r = _cli("audit", "hub:tiny-org/steward", "hub:tiny-org/grabber", "--prompts",
             testbed.root / "data" / "benchmark.jsonl", "--out", out, "--detectors", "noise,lens", "--backend",
             "nnsight", "--remote", "--json")
    assert r.exit_code == 0, r.output
    record = json.loads(r.output)
    assert record["config"]["remote"] is True and record["n_prompts"] >= 2
    assert {v["detector"] for v in record["votes"]} == {"noise", "random", "blackbox"}
    assert "cannot run with --remote" in record["skipped"]["lens"]
    assert "served by NDIF" in record["skipped"]["weight_delta"]
    assert {r["strategy"]: r.get("backend", "tl") for r in _rows(out)} == \
        {"noise": "nnsight-remote", "blackbox": "nnsight-remote", "random": "tl"}
    # every model was opened for NDIF (scoring the prompts, then detection), never loaded here; only tokenizer files
    # were hashed (to check that the pair shares one)
    opened, hashed = simulated_ndif
    assert {name for name, _ in opened} == {"hub:tiny-org/steward", "hub:tiny-org/grabber"}
    assert all(remote is True for _, remote in opened) and set(hashed) == {"tokenizer.json"}
    manifest = json.loads((out / "testbed" / "manifest.json").read_text())
    entry = manifest["models"]["B"]
    assert "weights_sha256" not in entry
    assert entry["hub"] == {"id": "hub:tiny-org/grabber", "repo": "tiny-org/grabber", "revision": "main",
                            "commit": "0" * 39 + "1"}
    from poser_interp.testbed.folder import Testbed

    tb = Testbed.open(out / "testbed")
    assert tb.remote_spec("B").name == "hub:tiny-org/grabber"
    assert tb.problems() == []
    from poser_interp.errors import DataError

    with pytest.raises(DataError, match="written for NDIF"):  # never hashed here: not loaded here either
        tb.spec("B")
    # the prompts were scored through the traces as a local Hugging Face copy scores them
    from poser_interp.data.scenario_files import load_scenarios
    from poser_interp.testbed.from_models import _p_aligned_local

    bench = load_scenarios(out / "testbed" / "data" / "benchmark.jsonl")
    here = _p_aligned_local(tb.remote_spec("B"), bench, 512, "cpu", "fp32")
    there = json.loads((out / "testbed" / "models" / "B" / "benchmark_probs.json").read_text())
    assert max(abs(float(x) - there[s.id]) for s, x in zip(bench, here, strict=True)) <= 1e-4
