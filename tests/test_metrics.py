"""Metrics: pair outcomes, accuracy, AUROC, seeded bootstrap intervals, and NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from poser_interp.evaluation.metrics import (
    accuracy,
    auroc,
    bootstrap_accuracy,
    bootstrap_accuracy_by_model,
    bootstrap_auroc,
    pair_outcomes,
    summarize,
)


def test_pair_outcomes_and_accuracy():
    out = pair_outcomes([0.1, 0.5, 0.3, 0.2], [0.2, 0.4, 0.3, math.nan])
    assert out[:3].tolist() == [1.0, 0.0, 0.5]
    assert math.isnan(out[3])
    assert accuracy(out) == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3 decided pairs
    assert math.isnan(accuracy([math.nan, math.nan]))


def test_auroc_matches_rank_definition():
    scores = [0.9, 0.8, 0.3, 0.1, 0.5]
    faker = [True, False, True, False, False]
    # fakers 0.9, 0.3 vs aligned 0.8, 0.1, 0.5: 0.9 beats 3, 0.3 beats 1 -> 4 / 6
    assert auroc(scores, faker) == pytest.approx(4 / 6)
    assert auroc([1, 1], [True, False]) == 0.5
    assert math.isnan(auroc([1.0, 2.0], [True, True]))  # one class only
    assert auroc([0.9, math.nan, 0.1], [True, True, False]) == 1.0  # NaN model left out


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    out = (rng.random(40) < 0.8).astype(float)
    a, b = bootstrap_accuracy(out, seed=3), bootstrap_accuracy(out, seed=3)
    assert a == b and a[0] <= accuracy(out) <= a[1] and a[1] - a[0] > 0.05
    scores, faker = rng.random(20) + np.arange(20) % 2 * 0.5, np.arange(20) % 2 == 1
    lo, hi = bootstrap_auroc(scores, faker, seed=0)
    assert lo <= auroc(scores, faker) <= hi


def test_summary_reports_nan_instead_of_averaging_it():
    s = summarize(["p1", "p2", "p3"], [0.1, math.nan, 0.2], [0.3, 0.4, 0.1], ["a1", "a2", "f1"],
                  [0.1, math.nan, 0.5], [False, False, True])
    assert s.undecided_pairs == ("p2",) and s.n_decided == 2 and s.accuracy == 0.5
    assert s.nan_models == ("a2",) and s.auroc == 1.0
    assert "1 of 3 pairs undecided" in s.describe_nan() and "a2" not in s.describe_nan()
    assert "1 of 3 models" in s.describe_nan()
    clean = summarize(["p"], [0.1], [0.2], ["a", "f"], [0.1, 0.2], [False, True])
    assert clean.describe_nan() == "" and clean.accuracy == 1.0


def test_model_bootstrap_widens_the_interval_when_pairs_share_models():
    """6 aligned x 2 fakers: every pair of faker f1 is decided right, every pair of f2 wrong. The 12 pairs hold
    two fakers' worth of evidence: resampling models can draw f1 twice (accuracy 1) or f2 twice (0)."""
    aligned = [f"a{i}" for i in range(6)] * 2
    fakers = ["f1"] * 6 + ["f2"] * 6
    out = np.array([1.0] * 6 + [0.0] * 6)
    pairs_ci = bootstrap_accuracy(out, seed=0)
    models_ci = bootstrap_accuracy_by_model(out, aligned, fakers, seed=0)
    assert 0.2 < pairs_ci[0] < 0.5 < pairs_ci[1] < 0.8
    assert models_ci == (0.0, 1.0)
    assert bootstrap_accuracy_by_model(out, aligned, fakers, seed=0) == models_ci  # seeded
    with_nan = np.append(out, np.nan)
    assert bootstrap_accuracy_by_model(with_nan, [*aligned, "a9"], [*fakers, "f9"], seed=0) == models_ci
    assert all(math.isnan(x) for x in bootstrap_accuracy_by_model([math.nan], ["a"], ["f"]))
    s = summarize([f"p{i}" for i in range(12)], 1 - out, out, ["a0", "f1"], [0.0, 1.0], [False, True],
                  pair_models=list(zip(aligned, fakers, strict=True)))
    assert s.accuracy == 0.5 and s.accuracy_ci == models_ci


def test_auroc_is_the_pairwise_count_bit_for_bit_and_bootstrap_agrees_with_scipy():
    """Issue 15: scipy's Mann-Whitney U replaced the pairwise count; the numbers are identical on fixed inputs
    (with ties, NaN-free). The accuracy bootstrap stays ours; scipy.stats.bootstrap, given the same draws, agrees to
    1e-12 (its percentile interpolation rounds differently, so not bit for bit)."""
    from scipy.stats import bootstrap

    rng = np.random.default_rng(15)
    for t in range(200):
        n = int(rng.integers(2, 40))
        s = rng.integers(0, 4, n).astype(float) if t % 2 else rng.normal(size=n)  # ties in every other case
        y = rng.random(n) < 0.5
        y[0], y[1] = True, False
        diff = s[y][:, None] - s[~y][None, :]
        assert auroc(s, y) == float(((diff > 0) + 0.5 * (diff == 0)).mean())
    for seed in range(20):
        o = rng.choice([0.0, 0.5, 1.0], int(rng.integers(2, 30)))
        ref = bootstrap((o,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(seed))
        ours = bootstrap_accuracy(o, 2000, seed)
        assert ours == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
