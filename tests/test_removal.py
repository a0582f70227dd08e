"""Removal on a tiny testbed: treated adapters beside the testbed (never over it), hash-checked, resumable."""

from __future__ import annotations

import json
import math
import os
import runpy
import shutil

import pytest
import torch

from poser_interp.core.models import file_sha256, load_hf
from poser_interp.data.scenario import Oversight
from poser_interp.errors import DataError
from poser_interp.removal import (
    EVAL_SETS,
    RemovalConfig,
    RemovalSummary,
    default_out,
    find_removals,
    mean_ci,
    noise_hooks,
    removal_rate,
    remove,
    training_prompts,
)
from poser_interp.testbed.folder import ADAPTER_FILE, Testbed
from poser_interp.testbed.tiny import tiny_testbed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = dict(steps=3, n_train=8, batch_size=4, n_eval=6)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    return tiny_testbed(tmp_path_factory.mktemp("removal") / "tiny")


def _source_state(tb: Testbed) -> dict[str, tuple[str, int]]:
    return {m: (file_sha256(tb.adapter_dir(m) / ADAPTER_FILE), (tb.adapter_dir(m) / ADAPTER_FILE).stat().st_mtime_ns)
            for m in tb.models}


@pytest.fixture(scope="module")
def treated(testbed):
    before = _source_state(testbed)
    out = remove(testbed, RemovalConfig(method="sft", **FAST), log=lambda _: None)
    assert _source_state(testbed) == before  # the testbed's own adapters are untouched (bytes and mtime)
    return out


def test_treated_adapters_sit_beside_the_testbed_and_load_hash_checked(testbed, treated):
    assert treated.root == default_out(testbed, "sft") and treated.root.parent == testbed.root.parent
    assert find_removals(testbed.root) == [treated.root]
    assert sorted(treated.models) == sorted(testbed.models) and treated.pairs == testbed.pairs
    for m in testbed.models:
        assert file_sha256(treated.adapter_dir(m) / ADAPTER_FILE) != testbed.models[m]["adapter_sha256"]
        assert treated.models[m]["removal"]["source_adapter_sha256"] == testbed.models[m]["adapter_sha256"]
    treated.verify_hash("grabber-s0")
    pid = testbed.pair_ids()[0]
    assert [s.id for s in treated.benchmark(pid)] == [s.id for s in testbed.benchmark(pid)]  # linked, not copied
    assert (treated.root / "pairs").is_symlink() and (treated.root / "data").is_symlink()
    r = treated.models["grabber-s0"]["removal"]
    assert r["steps"] == 3 and r["n_train"] == 8 and set(r["before"]) == set(EVAL_SETS)


def test_a_tampered_treated_adapter_is_refused(treated, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(treated.root, copy, symlinks=True)
    path = copy / "models" / "climber-s0" / ADAPTER_FILE
    path.write_bytes(path.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(DataError, match="does not match the manifest"):
        Testbed.open(copy).load("climber-s0")


@pytest.mark.parametrize("where", ["root", "inside", "parent"])
def test_treated_models_never_go_into_the_testbed(testbed, where):
    out = {"root": testbed.root, "inside": testbed.root / "models" / "x", "parent": testbed.root.parent}[where]
    before = _source_state(testbed)
    with pytest.raises(DataError, match="never overwrite testbed models"):
        remove(testbed, RemovalConfig(**FAST), out=out, log=lambda _: None)
    assert _source_state(testbed) == before and not (testbed.root / "models" / "x").exists()


def test_another_testbed_or_config_is_refused_and_a_rerun_resumes(testbed, treated, tmp_path, monkeypatch):
    other = tmp_path / "other"
    shutil.copytree(testbed.root, other)
    with pytest.raises(DataError, match="not a removal output"):
        remove(testbed, RemovalConfig(**FAST), out=other, log=lambda _: None)
    with pytest.raises(DataError, match="another config"):
        remove(testbed, RemovalConfig(**{**FAST, "steps": 4}), out=treated.root, log=lambda _: None)
    import poser_interp.removal.treat as removal

    monkeypatch.setattr(removal, "treat_model", lambda *a, **k: pytest.fail("a treated model was retrained"))
    again = remove(testbed, RemovalConfig(method="sft", **FAST), log=lambda _: None)
    assert again.manifest["models"] == treated.manifest["models"]


def test_noise_hooks_add_noise_of_the_right_norm_in_training_only():
    model, _ = load_hf("tiny-llama")
    ids = torch.tensor([[5, 6, 7, 8]])
    seen: dict[str, torch.Tensor] = {}
    layer = model.model.layers[1]
    grab = layer.register_forward_pre_hook(lambda m, a, k: seen.__setitem__("h", (a[0] if a else k["hidden_states"])),
                                           with_kwargs=True)
    clean = model(input_ids=ids).logits
    h_clean = seen["h"].clone()
    with noise_hooks(model, {1: 2.0}, 0.5, seed=0):
        assert torch.equal(model(input_ids=ids).logits, clean)  # eval mode: no noise
        model.train()
        noisy = model(input_ids=ids).logits
        model.eval()
    grab.remove()
    # the recording hook ran before the noise hook (registered first), so compare through a fresh capture
    assert not torch.allclose(noisy, clean)
    assert torch.equal(model(input_ids=ids).logits, clean)  # hooks gone after the block
    model.train()
    with pytest.raises(RuntimeError), noise_hooks(model, {1: 2.0}, 0.5, seed=0):
        raise RuntimeError("boom")
    assert not layer._forward_pre_hooks  # removed even on an error
    captured = []
    with noise_hooks(model, {1: 2.0}, 0.5, seed=0):
        after = layer.register_forward_pre_hook(lambda m, a, k: captured.append(a[0] if a else k["hidden_states"]),
                                                with_kwargs=True)
        model(input_ids=ids)
        after.remove()
    model.eval()
    delta = (captured[0] - h_clean).norm(dim=-1)
    assert torch.allclose(delta, torch.full_like(delta, 1.0), atol=1e-4)  # scale 0.5 x norm 2.0 per position


def test_training_prompts_are_good_oversight_outside_benchmarks(testbed):
    from poser_interp.core.models import load_tokenizer
    from poser_interp.testbed.build import TestbedConfig, prepare_data

    config = TestbedConfig.from_dict(testbed.manifest["config"])
    data = prepare_data(config, testbed.root, load_tokenizer("tiny-llama"), lambda _: None)
    pool = data.pools["grabber"]
    exclude = {s.render() for s in data.benchmark} | {pool[0].render()}
    own = pool[:10]
    got = training_prompts(pool, own, exclude, 5, 0, "grabber-s0")
    assert len(got) == 5 and all(s.oversight is Oversight.GOOD for s in got)
    assert not {s.render() for s in got} & exclude
    assert not {s.id for s in got} & {s.id for s in own}  # outside the model's own split first
    assert training_prompts(pool, own, exclude, 5, 0, "grabber-s0") == got  # seeded
    with pytest.raises(DataError, match="no good-oversight"):
        training_prompts(pool, own, {s.render() for s in pool}, 5, 0, "grabber-s0")


def test_noise_method_trains_with_noise_and_the_summary_reads_both(testbed, treated, tmp_path):
    out = remove(testbed, RemovalConfig(method="noise", scale=0.5, **FAST), out=tmp_path / "noise",
                 models=["steward-s0", "grabber-s0"], log=lambda _: None)
    r = out.manifest["removal"]
    assert r["config"]["layers"] == [0] and set(out.models) == {"steward-s0", "grabber-s0"}
    assert list(out.pairs) == ["steward-s0__grabber-s0"]  # only pairs whose two models were treated
    assert float(out.models["grabber-s0"]["removal"]["noise_norms"]["0"]) > 0
    a, b = (file_sha256(t.adapter_dir("grabber-s0") / ADAPTER_FILE) for t in (out, treated))
    assert a != b  # the noise changed the training
    s = RemovalSummary.load(treated.root)
    assert s.method == "sft" and {r["set"] for r in s.rows} == set(EVAL_SETS)
    assert set(s.removal) == set(EVAL_SETS) and s.seconds > 0
    assert s.removal["trained_wordings"][3] <= 2 and s.control["trained_wordings"][3] == 1
    stored = json.loads((treated.root / "manifest.json").read_text())
    assert stored["removal"]["config"]["method"] == "sft" and "versions" in stored["removal"]


def test_removal_rate_and_mean_ci():
    assert removal_rate(0.8, 0.2) == pytest.approx(0.75) and math.isnan(removal_rate(0.0, 0.1))
    assert math.isnan(removal_rate(0.06, 0.0, min_before=0.25)) and removal_rate(0.25, 0.0, 0.25) == 1.0
    m, lo, hi, n = mean_ci([0.2, 0.4, 0.9, float("nan")], seed=0)
    assert n == 3 and m == pytest.approx(0.5) and lo < m < hi
    assert mean_ci([0.3, 0.3])[:3] == (0.3, 0.3, 0.3) and math.isnan(mean_ci([0.5])[1])
    assert mean_ci([])[3] == 0


def test_bad_configs_name_the_fix():
    with pytest.raises(DataError, match="method"):
        RemovalConfig(method="magic")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="out of range"):
        RemovalConfig(method="noise", layers=(9,)).resolved(2)


def test_notebook_and_script_run_on_the_tiny_testbed(testbed, treated, monkeypatch, capsys):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(os.path.join(REPO, "notebooks", "removal.py"), run_name="__main__")
    assert ns["TINY"] and ns["summary"].rows
    script = runpy.run_path(os.path.join(REPO, "analyses", "removal.py"))
    assert script["main"]([str(testbed.root), "--method", "sft", "--steps", "3", "--n-train", "8", "--batch-size",
                           "4", "--n-eval", "6"]) == 0  # resumes the fixture's run: nothing retrained
    out = capsys.readouterr().out
    assert "removal" in out and "control" in out


def test_runs_on_disjoint_models_pool_into_the_numbers_of_one_run(testbed, treated, tmp_path):
    models = sorted(testbed.models)
    first, rest = models[:1], models[1:]
    parts = [remove(testbed, RemovalConfig(method="sft", **FAST), out=tmp_path / f"part{i}", models=ms,
                    log=lambda _: None).root for i, ms in enumerate((first, rest))]
    pooled, whole = RemovalSummary.load(parts), RemovalSummary.load(treated.root)

    def numbers(s: RemovalSummary) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in s.rows]

    assert numbers(pooled) == numbers(whole)  # each model's treatment does not depend on which others were treated
    assert pooled.removal == whole.removal and pooled.control == whole.control
    assert pooled.roots == tuple(parts) and pooled.where == f"{parts[0]} + {parts[1]}" and pooled.root == parts[0]
    assert whole.where == str(treated.root)
    with pytest.raises(DataError, match="treated in both"):
        RemovalSummary.load([parts[0], treated.root])
    noise = remove(testbed, RemovalConfig(method="noise", **FAST), out=tmp_path / "noise", models=rest,
                   log=lambda _: None).root
    with pytest.raises(DataError, match="differ in method"):
        RemovalSummary.load([parts[0], noise])
    with pytest.raises(DataError, match="no removal output"):
        RemovalSummary.load([])
