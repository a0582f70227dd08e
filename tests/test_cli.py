"""The command line: info, score, generate, and clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from poser_interp.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_info_tiny():
    res = run("info", "--model", "tiny-llama")
    assert res.exit_code == 0
    assert "layers" in res.output and "d_model" in res.output and "hook points" in res.output
    assert "64" in res.output


def test_info_unknown_model_is_a_clean_error():
    res = run("info", "--model", "no-such-model")
    assert res.exit_code == 2 and "unknown model 'no-such-model'" in res.output and "Traceback" not in res.output


def test_generate_then_score(tmp_path):
    res = run("generate", "--out", str(tmp_path), "--n-train", "10", "--n-test", "6", "--n-benchmark", "4")
    assert res.exit_code == 0 and (tmp_path / "benchmark.jsonl").exists()
    res = run("score", str(tmp_path / "benchmark.jsonl"), "--model", "tiny-llama")
    assert res.exit_code == 0
    assert "P(A)" in res.output and "P(B)" in res.output and "4 scenarios" in res.output
    res = run("score", str(tmp_path / "test.jsonl"), "--model", "tiny-llama", "--answer-format", "letter",
              "--limit", "3")
    assert res.exit_code == 0 and "letter" in res.output and "3 of 6 scenarios" in res.output


@pytest.mark.parametrize(("content", "message"), [(None, "does not exist"), ("{oops\n", "not JSON")])
def test_score_bad_file(tmp_path, content, message):
    path = tmp_path / "s.jsonl"
    if content is not None:
        path.write_text(content)
    res = run("score", str(path), "--model", "tiny-llama")
    assert res.exit_code == 2 and message in res.output


def test_testbed_verify_missing(tmp_path):
    res = run("testbed", "verify", str(tmp_path / "nope"))
    assert res.exit_code == 2 and "no testbed" in res.output


@pytest.mark.slow
def test_info_embedded_model():
    res = run("info")
    assert res.exit_code == 0 and "30" in res.output and "576" in res.output


def test_testbed_build_defaults_are_the_default_testbed_recipe(tmp_path, monkeypatch):
    from dataclasses import replace
    from types import SimpleNamespace

    from poser_interp.core.models import ModelSpec
    from poser_interp.testbed import build as testbed_build

    seen = {}

    def fake_build(config, out, **_):
        seen["config"] = config
        return SimpleNamespace(root=out, pairs={}, manifest={"config": {}})

    monkeypatch.setattr(testbed_build, "build", fake_build)
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    # no recipe: the dataclass defaults, which are testbed v2c's recipe plus the weight-change norm term (v2d)
    manifest = Path(__file__).parents[1] / "testbeds" / "v2c" / "manifest.json"
    v2d = json.loads(manifest.read_text())["config"]
    v2d["recipe"]["delta_norm_target"] = 19.0
    v2d["recipe"]["delta_norm_weight"] = 20.0
    v2d["base"]["name"] = "tiny-llama"
    assert seen["config"] == testbed_build.TestbedConfig.from_dict(v2d)
    assert seen["config"] == replace(testbed_build.TestbedConfig(), base=ModelSpec(name="tiny-llama"))
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path), "--set", "n_other_facts=3")
    assert res.exit_code == 2 and "n_other_facts = 3 has the wrong type" in res.output


def test_testbed_build_passes_batch_size_and_device_and_refuses_a_missing_gpu(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import torch

    from poser_interp.testbed import build as testbed_build

    seen = {}

    def fake_build(config, out, **kw):
        seen.update(config=config, **kw)
        return SimpleNamespace(root=out, pairs={}, manifest={"config": {}})

    monkeypatch.setattr(testbed_build, "build", fake_build)
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path), "--batch-size", "32",
              "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert seen["config"].recipe.batch_size == 32 and seen["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    seen.clear()
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path), "--device", "cuda")
    assert res.exit_code == 2 and "no CUDA GPU" in res.output and "--device cpu" in res.output and not seen
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path), "--device", "gpu0")
    assert res.exit_code == 2 and "pass cpu, cuda, cuda:N or auto" in res.output and not seen
    res = run("testbed", "build", "--set", "base.name=tiny-llama", "--out", str(tmp_path), "--batch-size", "0")
    assert res.exit_code == 2 and not seen
