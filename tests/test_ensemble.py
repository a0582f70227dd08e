"""Held-out choices from stored scores: strict leave-one-persona-out folds never see the pairs they decide."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from poser_interp.evaluation import ensemble
from poser_interp.evaluation.ensemble import (
    View,
    fit_fold,
    held_out,
    model_groups,
    persona_folds,
    transfer,
)
from poser_interp.evaluation.metrics import summarize
from poser_interp.evaluation.runner import Evaluation, Result
from poser_interp.strategies import Setting

PERSONAS = {"steward": "aligned", "guardian": "aligned", "grabber": "faker", "climber": "faker"}
MOTIVES = {"steward": "resources", "grabber": "resources", "guardian": "power", "climber": "power"}
MODELS = {f"{p}-s{k}": {"persona": p, "kind": kind, "motive": MOTIVES[p]} for p, kind in PERSONAS.items()
          for k in range(2)}
PAIRS = {f"{a}__{f}": {"aligned": a, "faker": f} for a, e in MODELS.items() if e["kind"] == "aligned"
         for f, g in MODELS.items() if g["kind"] == "faker"}


def _result(strategy: str, setting: Setting, score: str, primary: bool, model_scores: dict[str, float],
            rng: np.random.Generator) -> Result:
    pair_scores = {p: (model_scores[e["aligned"]] + 0.01 * rng.standard_normal(),
                       model_scores[e["faker"]] + 0.01 * rng.standard_normal()) for p, e in PAIRS.items()}
    ids = sorted(PAIRS)
    models = sorted(MODELS)
    summary = summarize(ids, [pair_scores[p][0] for p in ids], [pair_scores[p][1] for p in ids], models,
                        [model_scores[m] for m in models], [MODELS[m]["kind"] == "faker" for m in models],
                        n_boot=50, pair_models=[(PAIRS[p]["aligned"], PAIRS[p]["faker"]) for p in ids])
    return Result(strategy, setting, score, score, primary, summary, pair_scores, model_scores, 1.0)


def evaluation(seed: int = 0, flip_power: bool = False) -> Evaluation:
    """Two strategies over 16 pairs: `good` separates kinds at layer 1 only; `noise` is random; baselines too.

    flip_power: `good` at layer 1 points the wrong way on the power family (guardian, climber), while layer 2 is
    right there and at chance on resources.
    """
    rng = np.random.default_rng(seed)
    faker = {m: float(e["kind"] == "faker") for m, e in MODELS.items()}
    power = {m: e["motive"] == "power" for m, e in MODELS.items()}
    results = []
    l1 = {m: (1 - faker[m] if flip_power and power[m] else faker[m]) + 0.1 * rng.random() for m in MODELS}
    l2 = {m: (faker[m] if power[m] else 0.0) + 0.1 * rng.random() for m in MODELS} if flip_power else \
        {m: rng.random() for m in MODELS}
    results.append(_result("good", Setting.of(layer=1), "s", True, l1, rng))
    results.append(_result("good", Setting.of(layer=2), "s", False, l2, rng))
    results.append(_result("noise", Setting(), "n", True, {m: rng.random() for m in MODELS}, rng))
    results.append(_result("blackbox", Setting(), "p_misaligned", True, {m: rng.random() for m in MODELS}, rng))
    return Evaluation(tuple(results), {m: e["kind"] for m, e in MODELS.items()}, {p: ["x"] for p in PAIRS})


PERSONA, FAMILY = model_groups(MODELS)


def test_folds_are_persona_cells_fitted_on_pairs_sharing_no_persona():
    folds = persona_folds(PAIRS, PERSONA)
    assert [f.label for f in folds] == ["guardian x climber", "guardian x grabber", "steward x climber",
                                        "steward x grabber"]
    assert sorted(p for f in folds for p in f.test) == sorted(PAIRS)  # every pair decided exactly once
    for f in folds:
        assert len(f.test) == 4 and len(f.train) == 4 and not set(f.test) & set(f.train)
        test_personas = {PERSONA[PAIRS[p][k]] for p in f.test for k in ("aligned", "faker")}
        train_personas = {PERSONA[PAIRS[p][k]] for p in f.train for k in ("aligned", "faker")}
        assert not test_personas & train_personas
        test_models = {PAIRS[p][k] for p in f.test for k in ("aligned", "faker")}
        assert not test_models & {PAIRS[p][k] for p in f.train for k in ("aligned", "faker")}


def test_fitting_reads_only_the_training_pairs(monkeypatch):
    """Every score a fit reads goes through a View of the fold's training pairs and their models, and nothing else."""
    ev = evaluation()
    seen: list[tuple[str, set[str]]] = []
    original = View.of.__func__  # type: ignore[attr-defined]

    def spy(cls, result, pair_ids, pairs):
        seen.append((result.strategy, set(pair_ids)))
        return original(cls, result, pair_ids, pairs)

    monkeypatch.setattr(ensemble.View, "of", classmethod(spy))
    for fold in persona_folds(PAIRS, PERSONA):
        seen.clear()
        fit = fit_fold(ev, fold, PAIRS, ["good", "noise"])
        assert seen and all(ids == set(fold.train) for _, ids in seen)
        assert fit.best is not None and fit.logistic is not None


def test_held_out_choices_do_not_move_when_the_decided_pairs_change():
    """Corrupting every score of a fold's test pairs and test models leaves its choices and weights unchanged."""
    ev = evaluation()
    probe = [0.2, 0.7, 0.9, 0.1, 0.5]
    for fold in persona_folds(PAIRS, PERSONA):
        test_models = {PAIRS[p][k] for p in fold.test for k in ("aligned", "faker")}
        corrupt = Evaluation(tuple(replace(r, pair_scores={p: ((-9.0, 9.0) if p in fold.test else s)
                                                           for p, s in r.pair_scores.items()},
                                           model_scores={m: (math.nan if m in test_models else s)
                                                         for m, s in r.model_scores.items()})
                                   for r in ev.results), ev.kinds, ev.pair_prompts)
        a, b = (fit_fold(e, fold, PAIRS, ["good", "noise"]) for e in (ev, corrupt))
        assert (a.best.strategy, a.best.setting) == (b.best.strategy, b.best.setting)
        assert [(r.strategy, r.setting) for r in a.members] == [(r.strategy, r.setting) for r in b.members]
        assert [(r.strategy, r.setting) for r in a.ranked] == [(r.strategy, r.setting) for r in b.ranked]
        assert np.array_equal(a.logistic.weights, b.logistic.weights)
        assert np.array_equal(a.logistic.mean, b.logistic.mean) and np.array_equal(a.logistic.scale, b.logistic.scale)
        assert [a.rank_average([x] * len(a.ranked)) for x in probe] == [b.rank_average([x] * len(b.ranked))
                                                                        for x in probe]


def test_held_out_methods_decide_every_pair_and_find_the_signal():
    fits, results = held_out(evaluation(), PAIRS, PERSONA, n_boot=200)
    by = {r.name: r for r in results}
    assert set(by) == {"best_single", "rank_average", "logistic"}
    for r in results:
        assert set(r.pair_scores) == set(PAIRS) and r.summary.n_decided == 16
        assert len(r.choices) == 4
    for name in ("best_single", "logistic"):
        assert by[name].summary.accuracy == 1.0 and by[name].summary.auroc == 1.0
    assert by["rank_average"].summary.accuracy > 0.5  # equal weights: a lucky noise member can dilute it
    assert all(f.best.strategy == "good" and f.best.setting == Setting.of(layer=1) for f in fits)
    assert all(f.logistic.weights[0] > 0 for f in fits)  # the good member weighs positively
    assert "good layer=1 s" in by["best_single"].choices["steward x grabber"]
    assert all("blackbox" not in c for r in results for c in r.choices.values())  # baselines stay beside


def test_a_cell_without_disjoint_training_pairs_is_undecided():
    one_aligned = {p: e for p, e in PAIRS.items() if e["aligned"].startswith("steward")}
    ev = evaluation()
    ev = Evaluation(ev.results, ev.kinds, {p: ["x"] for p in one_aligned})
    fits, results = held_out(ev, one_aligned, PERSONA, n_boot=50)
    assert all(not f.fold.train for f in fits)
    for r in results:
        assert r.summary.n_decided == 0 and math.isnan(r.summary.accuracy)
        assert all(c.startswith("undecided") for c in r.choices.values())


def test_transfer_between_families():
    rows = transfer(evaluation(flip_power=True), PAIRS, FAMILY, ["good"])
    assert {(r.chosen_on, r.tested_on) for r in rows} == {("power", "resources"), ("resources", "power")}
    by = {(r.chosen_on, r.tested_on): r for r in rows}
    res_to_pow = by[("resources", "power")]
    assert res_to_pow.chosen.setting == Setting.of(layer=1) and res_to_pow.train_accuracy == 1.0
    assert res_to_pow.test_accuracy == 0.0 and res_to_pow.n_train == res_to_pow.n_test == 4  # chosen on A, fails on B
    pow_to_res = by[("power", "resources")]
    assert pow_to_res.chosen.setting == Setting.of(layer=2) and pow_to_res.primary_test_accuracy == 1.0
    assert set(pow_to_res.test_pairs) == {p for p, e in PAIRS.items() if FAMILY[e["aligned"]] == "resources"
                                          and FAMILY[e["faker"]] == "resources"}


@pytest.mark.parametrize("entry, persona, family", [({"persona": "genie", "motive": None}, "genie", "genie"),
                                                    ({}, "steward", "steward")])
def test_model_groups_fall_back(entry, persona, family):
    p, f = model_groups({"steward-s1" if not entry else "genie-s0": entry})
    assert list(p.values()) == [persona] and list(f.values()) == [family]
