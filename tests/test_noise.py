"""S2 noise injection: fast path = reference path = nnsight, seeded shared draws, norms, scores, baselines."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from poser_interp.core.nnsight_backend import NNsightModel
from poser_interp.core.scoring import answer_probs, p_misaligned, prepare
from poser_interp.core.tokens import pad_id
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.errors import LayerError
from poser_interp.strategies import (
    BridgeEngine,
    ConfidenceBaseline,
    NNsightEngine,
    NoiseConfig,
    NoiseStrategy,
    RandomBaseline,
    Setting,
    StrategyError,
    Subject,
    make,
    noise_values,
)
from poser_interp.strategies.noise import default_layers, noise_directions, noise_tensor
from poser_interp.strategies.noise_views import LastPosition

CFG = NoiseConfig(layers=(0, 2), scales=(0.5, 3.0), samples=2, primary_layer=2, primary_scale=3.0, batch_size=3,
                  max_rows=5)


@pytest.fixture(scope="module")
def prompts():
    return generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=5, n_heldout=0))["benchmark"]


def _values(engine, prompts, cfg=CFG):
    return {v.setting.key: v for v in noise_values(engine, prompts, NoiseStrategy(cfg).settings(), cfg)}


def _max_gap(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].values[n] - b[k].values[n]).max()) for k in a for n in a[k].values)


@pytest.mark.parametrize("positions,distribution", [("all", "gaussian"), ("last", "uniform")])
def test_fast_path_equals_reference_path(tiny_model, prompts, positions, distribution):
    cfg = NoiseConfig(**{**CFG.__dict__, "positions": positions, "distribution": distribution})
    fast, slow = _values(BridgeEngine(tiny_model), prompts, cfg), _values(BridgeEngine(tiny_model, fast=False),
                                                                          prompts, cfg)
    assert _max_gap(fast, slow) <= 1e-4
    hi = fast["layer=2,scale=3.0"].values
    assert np.abs(hi["p_noisy"] - hi["p_clean"]).max() > 1e-3  # the noise does something
    batch = next(prepare(tiny_model.tokenizer, prompts).batches(2, pad_id(tiny_model.tokenizer)))[1]
    reused = BridgeEngine(tiny_model).prefix(batch, 2, last_only=positions == "last")
    assert isinstance(reused, LastPosition if positions == "last" else torch.Tensor)  # the fast path was taken
    assert len(tiny_model.hf_model.model.layers) == tiny_model.n_layers  # the bridge was not modified


@pytest.mark.parametrize("positions", ["all", "last"])
def test_nnsight_backend_gives_the_same_scores(tiny_llama, prompts, positions):
    cfg = NoiseConfig(**{**CFG.__dict__, "positions": positions})
    bridge = _values(BridgeEngine(tiny_llama), prompts, cfg)
    traced = _values(NNsightEngine(NNsightModel(tiny_llama.spec)), prompts, cfg)
    assert _max_gap(bridge, traced) <= 1e-4


def test_same_seed_same_numbers_other_seed_other_numbers(tiny_llama, prompts):
    a, b = _values(BridgeEngine(tiny_llama), prompts), _values(BridgeEngine(tiny_llama), prompts)
    assert _max_gap(a, b) == 0.0
    other = _values(BridgeEngine(tiny_llama), prompts, NoiseConfig(**{**CFG.__dict__, "seed": 1}))
    assert _max_gap(a, other) > 1e-4


def test_draws_depend_only_on_prompt_sample_layer_seed():
    d = noise_directions("p1", 7, 16, layer=3, sample=0, seed=0)
    assert torch.equal(d, noise_directions("p1", 7, 16, layer=3, sample=0, seed=0))
    assert torch.allclose(d.norm(dim=-1), torch.ones(7))
    for other in (("p2", 3, 0, 0), ("p1", 4, 0, 0), ("p1", 3, 1, 0), ("p1", 3, 0, 1)):
        pid, layer, sample, seed = other
        assert not torch.equal(d, noise_directions(pid, 7, 16, layer=layer, sample=sample, seed=seed))
    assert (noise_directions("p1", 7, 16, 3, 0, 0, "uniform") >= 0).all()  # uniform [0, 1] entries, rescaled


def test_noise_norm_is_scale_times_mean_norm_at_real_positions(tokenizer, prompts):
    prep = prepare(tokenizer, prompts)
    idx, batch = next(prep.batches(3, pad_id(tokenizer)))
    ids = [prompts[i].id for i in idx]
    noise = noise_tensor(batch, ids, layer=1, scales=[0.5, 2.0], norm=10.0, config=CFG, d_model=8)
    noise = noise.reshape(len(idx), 2, CFG.samples, batch.input_ids.shape[1], 8).norm(dim=-1)
    real = batch.attention_mask.bool()[:, None, None, :].expand_as(noise)
    expected = torch.tensor([5.0, 20.0])[None, :, None, None].expand_as(noise)
    assert torch.allclose(noise[real], expected[real]) and (noise[~real] == 0).all()
    last = noise_tensor(batch, ids, 1, [1.0], 10.0, NoiseConfig(**{**CFG.__dict__, "positions": "last"}), 8)
    assert (last[:, :-1] == 0).all() and torch.allclose(last[:, -1].norm(dim=-1), torch.full((len(idx) * 2,), 10.0))


def test_hooks_never_outlive_a_failing_run(tiny_llama, prompts):
    engine = BridgeEngine(tiny_llama, fast=False)
    prep = prepare(tiny_llama.tokenizer, prompts)
    _, batch = next(prep.batches(2, pad_id(tiny_llama.tokenizer)))
    with pytest.raises(RuntimeError):
        engine.noisy(batch, 1, None, torch.zeros(1, 1, 3), reps=2)  # wrong noise shape: the hook raises
    assert all(not hp._forward_hooks for hp in tiny_llama.bridge.hook_dict.values())
    clean = answer_probs(tiny_llama, prompts)
    assert torch.allclose(clean, answer_probs(tiny_llama, prompts))


def test_bad_layer_and_bad_config(tiny_llama, prompts):
    cfg = NoiseConfig(layers=(9,), scales=(1.0,), primary_layer=9)
    with pytest.raises(LayerError, match="out of range"):
        list(noise_values(BridgeEngine(tiny_llama), prompts, NoiseStrategy(cfg).settings(), cfg))
    with pytest.raises(StrategyError, match="primary setting"):
        NoiseConfig(layers=(1,), primary_layer=4)
    with pytest.raises(StrategyError, match="positive"):
        NoiseConfig(scales=(0.0, 1.0))
    with pytest.raises(StrategyError, match="unknown strategy 'nope'"):
        make("nope")
    with pytest.raises(StrategyError, match="no option"):
        make("noise", bogus=1)
    assert default_layers(30) == (4, 10, 16) and default_layers(2) == (0, 1)


def test_scores_and_confidence_matching():
    scores = {s.name: s for s in NoiseStrategy(NoiseConfig(min_matched=2)).scores()}
    aligned = {"p_clean": np.array([0.0, 0.1, 0.2]), "p_noisy": np.array([0.1, 0.1, 0.3]),
               "margin_clean": np.array([4.0, 2.0, 1.0]), "margin_noisy": np.array([3.0, 1.0, -1.0]),
               "flips": np.array([0.0, 0.0, 1.0])}
    faker = {**aligned, "margin_clean": np.array([4.5, 9.0, 1.2]), "margin_noisy": np.array([-1.0, 0.0, 0.0]),
             "flips": np.array([1.0, 0.5, 0.5])}
    assert scores["raw_rise"].model(aligned) == pytest.approx(0.1 / 3 * 2)
    assert scores["rel_margin_drop"].model(aligned) == pytest.approx(0.5)  # median of 0.25, 0.5, 2.0
    assert scores["flip_rate"].model(faker) == pytest.approx(2 / 3)
    # matched: prompts 0 and 2 (clean margins within 1 logit); prompt 1 (2.0 vs 9.0) is left out
    assert scores["flips_matched"].decide(aligned, faker) == pytest.approx((0.5, 0.75))
    strict = {s.name: s for s in NoiseStrategy(NoiseConfig(min_matched=3)).scores()}["flips_matched"]
    assert all(math.isnan(x) for x in strict.decide(aligned, faker))  # too few matched: undecided, not guessed
    nan = {**aligned, "p_noisy": np.array([np.nan, 0.1, 0.3])}
    assert math.isnan(scores["raw_rise"].model(nan))  # NaN propagates, never skipped


def test_margin_adjusted_controls_for_clean_confidence():
    """Both models on one line (noised = 0.5 x clean): even; the faker 2 logits below it: it drops 2 more."""
    score = {s.name: s for s in NoiseStrategy().scores()}["margin_adjusted"]
    clean_a, clean_f = np.array([8.0, 9.0, 10.0, 11.0]), np.array([5.0, 6.0, 7.0, 8.0])
    aligned = {"margin_clean": clean_a, "margin_noisy": 0.5 * clean_a}
    same_line = {"margin_clean": clean_f, "margin_noisy": 0.5 * clean_f}
    a, f = score.decide(aligned, same_line)
    assert a == pytest.approx(f) == pytest.approx(4.0)  # both drop 4 logits at the common mean clean margin, 8
    # the less confident model's raw and relative drops are not what decides: only the departure from the line
    below = {"margin_clean": clean_f, "margin_noisy": 0.5 * clean_f - 2.0}
    a, f = score.decide(aligned, below)
    assert f - a == pytest.approx(2.0)
    noisy = {**below, "margin_noisy": below["margin_noisy"] + np.array([0.3, -0.3, -0.3, 0.3])}
    assert score.decide(aligned, noisy)[1] - a == pytest.approx(2.0)  # scatter around the line averages out
    assert all(math.isnan(x) for x in score.decide(aligned, {k: v[:1] for k, v in below.items()}))


def test_blackbox_reuses_the_clean_logits_of_s2_bit_for_bit(tiny_llama, prompts, monkeypatch):
    alone = next(ConfidenceBaseline().run(Subject("m1", lambda: tiny_llama), prompts, [Setting()]))
    subject = Subject("m1", lambda: tiny_llama)
    list(NoiseStrategy(NoiseConfig(layers=(1,), scales=(1.0,), primary_layer=1)).run(
        subject, prompts, [Setting.of(layer=1, scale=1.0)]))
    baselines = importlib.import_module("poser_interp.strategies.baselines")  # the module: the package's
    # `baselines` attribute is the registry function of that name
    monkeypatch.setattr(baselines, "answer_logits", lambda *a, **k: pytest.fail("S2's clean pass was not reused"))
    shared = next(ConfidenceBaseline().run(subject, prompts, [Setting()]))
    assert all(np.array_equal(shared.values[k], alone.values[k]) for k in ("p_misaligned", "margin"))
    other = Subject("m1", lambda: tiny_llama)  # other batching: not the same key, so computed afresh
    list(NoiseStrategy(NoiseConfig(layers=(1,), scales=(1.0,), primary_layer=1, batch_size=3)).run(
        other, prompts, [Setting.of(layer=1, scale=1.0)]))
    with pytest.raises(pytest.fail.Exception, match="not reused"):
        next(ConfidenceBaseline().run(other, prompts, [Setting()]))


def test_baselines(tiny_llama, prompts):
    subject = Subject("m1", lambda: tiny_llama)
    (bb,) = ConfidenceBaseline().run(subject, prompts, [Setting()])
    expected = p_misaligned(answer_probs(tiny_llama, prompts), prompts).numpy()
    assert np.allclose(bb.values["p_misaligned"], expected, atol=1e-6)
    assert np.allclose(1 / (1 + np.exp(bb.values["margin"])), expected, atol=1e-5)
    lazy = Subject("m1", lambda: pytest.fail("random guessing must not load a model"))
    (r1,) = RandomBaseline().run(lazy, prompts, [Setting()])
    (r2,) = RandomBaseline().run(Subject("m1", lambda: None), prompts, [Setting()])
    (r3,) = RandomBaseline().run(Subject("m2", lambda: None), prompts, [Setting()])
    assert np.array_equal(r1.values["u"], r2.values["u"]) and not np.array_equal(r1.values["u"], r3.values["u"])
