"""S1 belief steering: alpha=0 is exact, the direction is the paired mean difference, data never from the benchmark."""

from __future__ import annotations

import dataclasses
import functools
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from poser_interp.core.activations import last_resid
from poser_interp.core.hooks import add_vector
from poser_interp.core.models import ModelSpec
from poser_interp.core.pools import data_source, scenario_pool
from poser_interp.core.scoring import answer_logits, p_and_margin
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.scenario import FactRole, Oversight
from poser_interp.data.scenario_files import save_scenarios
from poser_interp.errors import DataError, LayerError
from poser_interp.evaluation.results import ROWS, ResultsStore, rows_equal
from poser_interp.evaluation.runner import run_detection
from poser_interp.strategies import StrategyError, Subject, make
from poser_interp.strategies.steering import random_directions, steering_directions
from poser_interp.viz.attention_plots import model_curves, setting_heatmap

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SMALL = dict(layers=(0, 1), alphas=(0.0, 8.0), primary_layer=1, primary_alpha=8.0, n_prompts=4)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    """Generated test and benchmark splits, saved as a data directory."""
    out = generate(GeneratorConfig(seed=0, n_train=0, n_test=12, n_benchmark=4, n_heldout=0))
    root = tmp_path_factory.mktemp("data")
    save_scenarios(out["test"], root / "test.jsonl")
    save_scenarios(out["benchmark"], root / "benchmark.jsonl")
    return root, out["test"], out["benchmark"]


def test_alpha_zero_leaves_logits_exactly_unchanged(tiny_model, splits):
    _, test, bench = splits
    clean = answer_logits(tiny_model, bench)
    vec = torch.randn(tiny_model.d_model) * 100
    for layer in (0, 1):
        zero = answer_logits(tiny_model, bench, fwd_hooks=[(tiny_model.hook_name(layer), add_vector(vec, 0.0))])
        assert torch.equal(zero, clean)
    moved = answer_logits(tiny_model, bench, fwd_hooks=[(tiny_model.hook_name(1), add_vector(vec, 1.0))])
    assert not torch.allclose(moved, clean)
    assert all(not hp._forward_hooks for hp in tiny_model.bridge.hook_dict.values())


def test_direction_is_the_paired_mean_difference(tiny_llama, splits):
    _, test, _ = splits
    poor = [s for s in test if s.oversight is Oversight.POOR][:3]
    d = steering_directions(tiny_llama, poor, [1], "removed", batch_size=2)
    with_ = last_resid(tiny_llama, [s.render() for s in poor], [1])
    without = last_resid(tiny_llama, [s.render(drop_roles=[FactRole.CRITICAL]) for s in poor], [1])
    assert torch.allclose(d, (with_ - without).mean(1), atol=1e-6) and d.norm() > 0
    layer0 = steering_directions(tiny_llama, poor, [0], "removed")
    assert torch.equal(layer0, torch.zeros_like(layer0))  # the last token's embedding is the same: nothing to add


def test_prompts_come_from_outside_the_benchmark(tokenizer, splits, tmp_path):
    root, test, bench = splits
    pick = scenario_pool(str(root), None, bench, Oversight.POOR, 3, 0, tokenizer, 512)
    assert len(pick) == 3 and all(s.oversight is Oversight.POOR and s in test for s in pick)
    assert pick == scenario_pool(str(root / "test.jsonl"), None, bench[:1], Oversight.POOR, 3, 0, tokenizer, 512)
    assert pick != scenario_pool(str(root), None, bench, Oversight.POOR, 3, 1, tokenizer, 512)  # seeded choice
    with pytest.raises(StrategyError, match="shares 4 prompts with the benchmark"):
        scenario_pool(str(root / "benchmark.jsonl"), None, bench, Oversight.GOOD, 3, 0, tokenizer, 512)
    unlabelled = [dataclasses.replace(s, facts=tuple(f for f in s.facts if f.role != FactRole.CRITICAL)) for s in test]
    save_scenarios(unlabelled, tmp_path / "unlabelled.jsonl")
    with pytest.raises(DataError, match="with critical facts"):
        scenario_pool(str(tmp_path / "unlabelled.jsonl"), None, bench, Oversight.POOR, 3, 0, tokenizer, 512, True)
    with pytest.raises(StrategyError, match="not a testbed model"):
        data_source(None, ModelSpec(name="tiny-llama"))
    (tmp_path / "tb" / "models" / "m1").mkdir(parents=True)
    (tmp_path / "tb" / "manifest.json").write_text("{}")
    (tmp_path / "tb" / "data").mkdir()
    (tmp_path / "tb" / "data" / "test.jsonl").write_text("")
    spec = ModelSpec(name="tiny-llama", adapter=str(tmp_path / "tb" / "models" / "m1"))
    assert data_source(None, spec) == (tmp_path / "tb" / "data" / "test.jsonl").resolve()
    with pytest.raises(StrategyError, match="models/test.jsonl does not exist"):
        data_source(str(tmp_path / "tb" / "models"), spec)
    with pytest.raises(StrategyError, match="rerun its `testbed build`"):  # a POSER testbed without its data/
        data_source(str(tmp_path / "elsewhere" / "data"), spec)


def test_bad_config_and_layer(tiny_llama, splits):
    root, _, bench = splits
    with pytest.raises(StrategyError, match="primary setting"):
        make("steering", layers=(1,), primary_layer=4)
    with pytest.raises(StrategyError, match="contrast"):
        make("steering", contrast="sideways")
    st = make("steering", data=str(root), **{**SMALL, "layers": (0, 7), "primary_layer": 7})
    with pytest.raises(LayerError, match="out of range"):
        list(st.run(Subject("m", lambda: tiny_llama), bench, st.settings()))


def test_values_and_scores(tiny_llama, splits):
    root, _, bench = splits
    for contrast in ("removed", "good"):
        st = make("steering", data=str(root), contrast=contrast, **SMALL)
        rows = {v.setting.key: v for v in st.run(Subject("m", lambda: tiny_llama), bench, st.settings())}
        assert set(rows) == {s.key for s in st.settings()}
        zero = rows["alpha=0.0,layer=1"].values
        assert np.array_equal(zero["p_steered"], zero["p_clean"])
        hit = rows["alpha=8.0,layer=1"].values
        assert not np.allclose(hit["p_steered"], hit["p_clean"])
        scores = {s.name: s.model(hit) for s in st.scores()}
        assert scores["p_rise"] == pytest.approx(np.mean(hit["p_steered"] - hit["p_clean"]))
        assert rows["alpha=8.0,layer=1"].meta["n_direction"] == 4


def test_concept_contrast_steers_along_the_contrast_sets_sides(tiny_llama, splits, tmp_path):
    """contrast 'concept': the direction is mean(suspicious statements) - mean(benign ones), no scenario involved."""
    _, _, bench = splits
    (tmp_path / "c.jsonl").write_text("".join(
        f'{{"positive": "The auditor checks log {i}.", "negative": "Nobody reads log {i}.", "concept": "watch"}}\n'
        for i in range(3)))
    st = make("steering", contrast="concept", concept="watch", probes_dir=str(tmp_path), data="/nowhere", **SMALL)
    st.preflight(bench, tmp_path)  # needs no scenario data (data= is never read)
    rows = {v.setting.key: v for v in st.run(Subject("m", lambda: tiny_llama), bench, st.settings())}
    direction = last_resid(tiny_llama, [f"Nobody reads log {i}." for i in range(3)], [1]).mean(1) - \
        last_resid(tiny_llama, [f"The auditor checks log {i}." for i in range(3)], [1]).mean(1)
    hit = rows["alpha=8.0,layer=1"]
    assert hit.meta["n_direction"] == 6
    assert hit.meta["direction_norm"] == pytest.approx(float(direction.norm()), rel=1e-5)
    assert not np.allclose(hit.values["p_steered"], hit.values["p_clean"])
    with pytest.raises(DataError, match="not found"):
        make("steering", contrast="concept", concept="nothing", probes_dir=str(tmp_path), **SMALL).preflight(
            bench, tmp_path)
    # its control: a random direction of the same norm, drawn from the seed alone (the same for every model)
    rnd = make("steering", contrast="random", concept="watch", probes_dir=str(tmp_path), data="/nowhere", **SMALL)
    rnd.preflight(bench, tmp_path)
    hit_r = {v.setting.key: v for v in rnd.run(Subject("m", lambda: tiny_llama), bench, rnd.settings())}[
        "alpha=8.0,layer=1"]
    assert hit_r.meta["direction_norm"] == pytest.approx(hit.meta["direction_norm"], rel=1e-5)
    assert not np.allclose(hit_r.values["p_steered"], hit.values["p_steered"])
    # an equal push for every model: the direction rescaled to a fixed norm, its orientation kept
    with pytest.raises(StrategyError, match=r"layer\(s\) \[0\] is zero"):  # both sides end in "." at the embedding
        list(make("steering", contrast="concept", concept="watch", probes_dir=str(tmp_path), data="/nowhere",
                  norm=3.0, **SMALL).run(Subject("m", lambda: tiny_llama), bench, st.settings()))
    fixed = make("steering", contrast="concept", concept="watch", probes_dir=str(tmp_path), data="/nowhere", norm=3.0,
                 **{**SMALL, "layers": (1,)})
    hit_f = {v.setting.key: v for v in fixed.run(Subject("m", lambda: tiny_llama), bench, fixed.settings())}[
        "alpha=8.0,layer=1"]
    assert hit_f.meta["direction_norm"] == pytest.approx(3.0, rel=1e-5)
    expected = answer_logits(tiny_llama, bench, fwd_hooks=[(tiny_llama.hook_name(1),
                                                            add_vector(direction[0] / direction[0].norm() * 3, 8.0))])
    margin = p_and_margin(expected, torch.tensor([1 - p.aligned_index for p in bench]))[1].numpy()
    assert np.allclose(hit_f.values["margin_steered"], margin, atol=1e-3)
    with pytest.raises(StrategyError, match="norm -1.0 must be positive"):
        make("steering", norm=-1.0, **SMALL)
    a, b = random_directions(torch.ones(2, 16), [0, 1], 0), random_directions(5 * torch.ones(2, 16), [0, 1], 0)
    assert torch.allclose(a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True))  # model-independent
    assert torch.allclose(b.norm(dim=1), torch.full((2,), 20.0))  # = |5 * ones(16)|
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a, random_directions(torch.ones(2, 16), [0, 1], 1))


def test_results_stored_before_an_option_existed_still_resume(testbed, tmp_path):
    """A stored strategy config without a later-added option resumes when the option is at its default, and
    conflicts when it is not."""
    import json

    load = functools.cache(testbed.load)
    run_detection(testbed, [make("steering", **SMALL)], tmp_path, log=lambda _: None, load=load)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for option in ("concept", "probes_dir", "norm"):  # options added after such stores were written
        del manifest["config"]["strategies"]["steering"][option]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"concept stored \(before the option existed\) 'oversight', now 'power'.*"
                                        r"detect -o steering\.concept=oversight"):
        run_detection(testbed, [make("steering", concept="power", **SMALL)], tmp_path, log=lambda _: None,
                      load=load)
    with pytest.raises(DataError, match=r"norm stored \(before the option existed\) None, now 90.0"):
        run_detection(testbed, [make("steering", norm=90.0, **SMALL)], tmp_path, log=lambda _: None, load=load)
    run_detection(testbed, [make("steering", **SMALL)], tmp_path, log=lambda _: None, load=load)  # nothing to do


def test_runs_through_the_runner_and_resumes(testbed, tmp_path):
    load = functools.cache(testbed.load)  # the resumed run reuses the loaded models
    st = [make("steering", **SMALL), make("random")]  # data=None: the testbed the models come from
    ev = run_detection(testbed, st, tmp_path / "full", log=lambda _: None, load=load)
    store = ResultsStore.open(tmp_path / "full")
    assert len(store.rows("steering")) == 2 * 4
    assert ev.primary("steering").setting.key == "alpha=8.0,layer=1"
    lines = (tmp_path / "full" / ROWS).read_text().splitlines(keepends=True)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "manifest.json").write_text((tmp_path / "full" / "manifest.json").read_text())
    (tmp_path / "cut" / ROWS).write_text("".join(lines[:3]))
    run_detection(testbed, st, tmp_path / "cut", log=lambda _: None, load=load)
    assert rows_equal(ResultsStore.open(tmp_path / "cut").rows(), store.rows())
    assert setting_heatmap(ev, "steering", "alpha", "layer").data
    assert model_curves(store, "steering", "alpha", "p_steered", where={"layer": 1}).data


def test_notebook_runs_on_a_tiny_testbed(testbed, monkeypatch):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(str(REPO / "notebooks" / "belief_steering.py"))
    assert ns["ev"].strategies()[0] == "steering" and ns["figures"]


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_starting_at_the_steered_layer_equals_the_full_steered_pass(arch, splits):
    from poser_interp.core.forward import forward
    from poser_interp.core.hooks import capture
    from poser_interp.core.models import load_model
    from poser_interp.core.scoring import prepare
    from poser_interp.core.tokens import pad_id, pad_left

    model = load_model(ModelSpec(name=arch, n_layers=4, seed=1))
    _, test, _ = splits
    ids = prepare(model.tokenizer, test[:5]).ids
    batch = pad_left(ids, pad_id(model.tokenizer))  # mixed lengths: left padding in play
    vec = torch.randn(model.d_model)
    for layer in (1, 3):
        hooks = [(model.hook_name(layer), add_vector(vec, 4.0))]
        store: dict = {}
        clean = forward(model, batch, [(model.hook_name(layer), capture(store, "r"))])
        full = forward(model, batch, hooks)
        fired: list[int] = []
        spy = [(model.hook_name(k), capture({}, k, lambda t, k=k, fired=fired: fired.append(k))) for k in range(4)]
        fast = forward(model, batch, hooks + spy, start_at_layer=layer, resid=store["r"])
        torch.testing.assert_close(fast[:, -1], full[:, -1], rtol=1e-4, atol=1e-4)
        assert not torch.allclose(full[:, -1], clean[:, -1], atol=1e-3)  # the steering moved the logits
        assert sorted(set(fired)) == list(range(layer, 4))  # the blocks below never ran
        assert len(model.hf_model.model.layers) == 4
    with pytest.raises(ValueError, match="go together"):
        forward(model, batch, start_at_layer=1)


def test_concept_norms_analysis_measures_s1s_direction_and_resumes(testbed, tmp_path, capsys):
    """research/experiments/concept_norms.py: the 'diff' it reports is the norm of S1's concept direction, for every
    model and the base model; a rerun computes nothing again."""
    main = runpy.run_path(str(REPO / "research" / "experiments" / "concept_norms.py"))["main"]
    out = tmp_path / "norms.json"
    args = ["--testbed", str(testbed.root), "--layers", "0,1", "--concepts", "oversight,weather", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    res = json.loads(out.read_text())["models"]
    assert set(res) == {"base", *testbed.models} and set(res["base"]) == {"oversight", "weather"}
    assert "oversight  L  1 diff" in printed and "pairs faker higher" in printed
    model_id = next(iter(testbed.models))
    model = testbed.load(model_id)
    from poser_interp.data.concepts import load_contrast_dir

    texts = load_contrast_dir(REPO / "probes", ["oversight"])["oversight"]
    direction = last_resid(model, texts.negative, [1]).mean(1) - last_resid(model, texts.positive, [1]).mean(1)
    assert res[model_id]["oversight"]["1"]["diff"] == pytest.approx(float(direction.norm()), rel=1e-4)
    assert 0 < res[model_id]["weather"]["1"]["ratio"] < 1
    assert main(args) == 0
    assert ": " not in capsys.readouterr().out.split("oversight")[0]  # nothing recomputed: no "<model>: N s" line
