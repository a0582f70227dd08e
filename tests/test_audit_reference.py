"""The audit's reference ensemble: fit on labelled gaps, leave-one-persona-out, calibration, and its use by audit."""

from __future__ import annotations

import numpy as np
import pytest

from poser_interp.audit.reference import fit_arrays
from poser_interp.audit.verdict import Vote, decide


def _pairs(n_seeds: int = 3):
    cells = [(a, f) for a in ("guardian", "steward") for f in ("grabber", "climber")]
    return [c for c in cells for _ in range(n_seeds * n_seeds)]


def test_a_detector_with_signal_gets_the_weight_and_a_high_held_out_accuracy():
    rng = np.random.default_rng(0)
    personas = _pairs()
    n = len(personas)
    gaps = {"good/s": rng.normal(1.0, 0.5, n), "noise/s": rng.normal(0.0, 1.0, n)}
    fit = fit_arrays(gaps, personas)
    assert fit["weights"]["good/s"] > 3 * abs(fit["weights"]["noise/s"])
    assert fit["lopo_accuracy"] >= 0.9 and fit["lopo_pairs"] == n  # every cell has an opposite cell to fit on
    assert fit["calibration"]["a"] > 0 and fit["calibration"]["b"] == 0
    assert sum(b["n"] for b in fit["reliability"]) == n
    high = [b for b in fit["reliability"] if b["predicted"] > 0.8]
    assert high and all(b["observed"] > 0.6 for b in high)


def test_chance_gaps_give_chance_held_out_accuracy_and_flat_probabilities():
    rng = np.random.default_rng(1)
    personas = _pairs(4)
    fit = fit_arrays({"a/s": rng.normal(0, 1, len(personas)), "b/s": rng.normal(0, 1, len(personas))}, personas)
    assert 0.3 <= fit["lopo_accuracy"] <= 0.7
    assert all(0.2 < b["predicted"] < 0.8 for b in fit["reliability"] if b["n"] >= 10)


def test_symmetric_in_a_and_b():
    """Swapping A and B gives 1 - p: a verdict never depends on the order the models were given in."""
    rng = np.random.default_rng(2)
    personas = _pairs()
    fit = fit_arrays({"x/s": rng.normal(1, 1, len(personas))}, personas)
    ref = {k: fit[k] for k in ("weights", "scales", "calibration")}

    def verdict(gap):
        v = Vote("x", "s", "-", 0, gap, gap, (gap - .1, gap + .1), "B" if gap > 0 else "A")
        return decide([v], ref, 10, 0).probability_b

    assert verdict(0.7) == pytest.approx(1 - verdict(-0.7))


def test_too_few_pairs_or_nan_are_said():
    from poser_interp.errors import DataError

    with pytest.raises(DataError, match="at least 4"):
        fit_arrays({"x/s": [1.0, float("nan"), 2.0]}, [("a", "f")] * 3)
