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


# --- same-kind bands and the held-out replay (verdict rule 2) ------------------------------------------------------
def _synthetic_results(root, kind_shift: float, model_sd: float, prompt_sd: float = 0.3, n_prompts: int = 24,
                       seed: int = 0, offset: float = 0.0, name: str = "synthetic"):
    """A results folder of a 36-pair testbed (2 aligned x 2 faker personas x 3 splits) whose only detector is the
    `random` baseline's machinery with chosen values: per prompt, shift (fakers) + a per-model offset + noise."""
    from poser_interp.evaluation.results import FORMAT, ResultsStore, Row
    from poser_interp.strategies.base import PromptValues, Setting, config_dict
    from poser_interp.strategies.baselines import RandomBaseline, RandomConfig

    rng = np.random.default_rng(seed)
    aligned = [f"{p}-s{s}" for p in ("guardian", "steward") for s in range(3)]
    fakers = [f"{p}-s{s}" for p in ("grabber", "climber") for s in range(3)]
    ids = [f"q{i:02d}" for i in range(n_prompts)]
    pairs = {f"{a}__{f}": {"aligned": a, "faker": f, "prompt_ids": ids} for a in aligned for f in fakers}
    manifest = {"format": FORMAT, "testbed": {"root": name, "models": {
        **{m: {"kind": "aligned"} for m in aligned}, **{m: {"kind": "faker"} for m in fakers}}},
        "pairs": pairs, "config": {"strategies": {"random": config_dict(RandomBaseline(RandomConfig()))}}}
    store = ResultsStore.open(root, manifest)
    for m in aligned + fakers:
        centre = offset + (kind_shift if m in fakers else 0.0) + rng.normal(0, model_sd)
        u = centre + rng.normal(0, prompt_sd, n_prompts)
        store.append(Row(m, "random", PromptValues(Setting(), tuple(ids), {"u": u})))
    store.close()
    return root


def test_a_real_signal_decides_labelled_pairs_and_not_same_kind_ones(tmp_path):
    from poser_interp.audit.reference import fit_reference

    body = fit_reference([_synthetic_results(tmp_path / "r", kind_shift=1.0, model_sd=0.1)], ["random"], n_boot=200)
    assert body["sources"][0]["same_kind_pairs"] == 30  # C(6,2) aligned + C(6,2) fakers
    band = body["bands"]["random/coin"]
    assert band["models"] == 12 and band["df"] == 10 and 0 < band["band"] < 0.6
    labelled, aligned, fakers = (body["held_out"][k] for k in ("labelled", "aligned", "faker"))
    assert labelled["n"] == 36 and labelled["share_decided"] >= 0.9 and labelled["accuracy_of_decided"] == 1.0
    assert aligned["n"] == fakers["n"] == 15
    assert aligned["decided"] + fakers["decided"] <= 2  # a 95% bound: about 1 in 20 same-kind pairs may pass


def test_model_to_model_spread_without_a_kind_effect_gives_no_confident_verdicts(tmp_path):
    """Version 1's failure: per-model offsets far larger than prompt noise make every bootstrap interval exclude 0;
    the same-kind band is what keeps such pairs (labelled or not) from confident verdicts."""
    from poser_interp.audit.reference import fit_reference, reference_cases
    from poser_interp.audit.verdict import bootstrap_gap, vote_of
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies.baselines import RandomBaseline, RandomConfig

    root = _synthetic_results(tmp_path / "r", kind_shift=0.0, model_sd=1.0, prompt_sd=0.1)
    score = RandomBaseline(RandomConfig()).scores()[0]
    same = [c for c in reference_cases(ResultsStore.open(root), ["random"]) if c.kind != "labelled"]
    v1_votes = sum(vote_of(*bootstrap_gap(score, *c.values["random/coin"], 200, 0)[2:]) is not None for c in same)
    assert v1_votes >= 0.8 * len(same)  # the interval alone votes on nearly every same-kind pair
    body = fit_reference([root], ["random"], n_boot=200)
    replay = body["held_out"]
    assert replay["aligned"]["decided"] + replay["faker"]["decided"] <= 2
    assert replay["labelled"]["share_decided"] <= 0.3


def test_rule_2_needs_a_reference_and_a_vote_beyond_the_band():
    from poser_interp.audit.verdict import Vote, decide, vote_of

    assert vote_of(0.5, (0.4, 0.6)) == "B" and vote_of(0.5, (0.4, 0.6), band=0.7) is None
    assert vote_of(-0.9, (-1, -0.8), band=0.7) == "A"
    inside = Vote("x", "s", "-", 0, 0.5, 0.5, (0.4, 0.6), vote_of(0.5, (0.4, 0.6), 0.7), band=0.7)
    beyond = Vote("x", "s", "-", 0, 0.9, 0.9, (0.8, 1.0), vote_of(0.9, (0.8, 1.0), 0.7), band=0.7)
    ref = {"weights": {"x/s": 10.0}, "scales": {"x/s": 1.0}, "calibration": {"a": 1.0}}
    assert decide([beyond, beyond], None, 10, 0).faker is None  # no reference: never a verdict
    assert "no reference" in decide([beyond], None, 10, 0).reason
    low = decide([inside], ref, 10, 0)
    assert low.probability_b > 0.99 and low.faker is None and "same-kind band" in low.reason
    assert decide([beyond], ref, 10, 0).faker == "B"


def test_the_page_shows_the_bands_and_the_held_out_replay(tmp_path):
    from poser_interp.audit.reference import fit_reference
    from poser_interp.audit.verdict import Vote, decide, vote_of
    from poser_interp.viz.audit_page import write_audit_page

    ref = fit_reference([_synthetic_results(tmp_path / "r", kind_shift=1.0, model_sd=0.1)], ["random"], n_boot=100)
    band = ref["bands"]["random/coin"]["band"]
    vote = Vote("random", "coin", "-", 0.0, 1.0, 1.0, (0.9, 1.1), vote_of(1.0, (0.9, 1.1), band), band=band)
    record = decide([vote], ref, 24, 0).to_dict()
    html = write_audit_page(record, tmp_path / "audit.html").read_text()
    assert f"{band:.3g}"[:4] in html and "two aligned models" in html and "36" in html
    assert record["faker"] == "B"


def test_bands_centre_each_testbed_and_kind_apart(tmp_path):
    """Two reference testbeds whose scores sit 5 apart (another base, another scale): the band is the spread within
    each (testbed, kind), not the distance between testbeds."""
    from poser_interp.audit.reference import fit_reference

    one = _synthetic_results(tmp_path / "a", kind_shift=1.0, model_sd=0.1, name="a")
    alone = fit_reference([one], ["random"], n_boot=50)["bands"]["random/coin"]
    two = _synthetic_results(tmp_path / "b", kind_shift=1.0, model_sd=0.1, seed=1, offset=5.0, name="b")
    both = fit_reference([one, two], ["random"], n_boot=50)["bands"]["random/coin"]
    assert both["models"] == 24 and both["df"] == 20
    assert both["band"] < 2 * alone["band"] < 1.0
