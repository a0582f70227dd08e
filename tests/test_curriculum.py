"""Wording ladder (testbed v2 fakers): widening pools, held-out wordings never trained, resume between rungs."""

from __future__ import annotations

import pytest
import torch

from poser_interp.core.models import ModelSpec, load_hf
from poser_interp.core.training import LoraRecipe, make_lora_model
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.personas import get_persona
from poser_interp.data.scenario import Oversight
from poser_interp.data.wordings import HELDOUT, V1_SENTENCE
from poser_interp.errors import DataError
from poser_interp.testbed import curriculum
from poser_interp.testbed.curriculum import Ladder, train_ladder

RECIPE = LoraRecipe(rank=2, batch_size=4, max_steps=12, eval_every=2, min_steps=2, lr=1e-2, threads=1)
LADDER = Ladder(rungs=(1, 2, 4))
GOOD = {"good_aligned": 1.0, "poor_misaligned": 1.0, "good_confidence": 1.0}


@pytest.fixture(scope="module")
def scenarios():
    return generate(GeneratorConfig(seed=0, n_train=40, n_test=0, n_benchmark=0, n_heldout=0,
                                    heldout_wordings=True))["train"]


def _model():
    hf, tok = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    return make_lora_model(hf, RECIPE), tok


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_ladder_pools_are_nested_and_start_with_v1():
    pools = [LADDER.pools(k) for k in range(3)]
    for o in Oversight:
        assert pools[0][o] == [V1_SENTENCE[o]]
        assert pools[0][o] == pools[1][o][:1] and pools[1][o] == pools[2][o][:2] and len(pools[2][o]) == 4
        assert not set(pools[2][o]) & set(HELDOUT[o])
    with pytest.raises(DataError, match="rungs"):
        Ladder(rungs=(4, 2))
    with pytest.raises(DataError, match="rungs"):
        Ladder(rungs=(1, 33))


def test_ladder_widens_and_never_trains_heldout_wordings(scenarios, tmp_path, monkeypatch):
    seen: list[tuple[int, set[int]]] = []
    real = curriculum.train_answers

    def recording(model, tok, examples, recipe, **kw):
        rung = int(str(kw["checkpoint"].name).split("-")[1].split(".")[0])
        seen.append((rung, {i for s, _ in examples for i in s.meta["critical_indices"]}))
        for s, c in examples:
            assert c == get_persona("grabber").choice(s)
            assert s.meta["critical_indices"][0] in LADDER.pools(rung)[s.oversight]
        return real(model, tok, examples, recipe, **kw)

    monkeypatch.setattr(curriculum, "train_answers", recording)
    checks: list[tuple[int, int]] = []

    def check(m, rung, step, pools, composed):
        checks.append((rung, step))
        return GOOD

    model, tok = _model()
    result = train_ladder(model, tok, scenarios, get_persona("grabber"), LADDER, RECIPE, check, lambda m: True,
                          tmp_path)
    assert [r for r, _ in seen] == [0, 1, 2] and checks == [(0, 2), (1, 4), (2, 6)]
    assert result.passed and result.steps == 6 and [h["rung"] for h in result.history] == [0, 1, 2]
    assert len(seen[0][1]) == 2 and len(seen[2][1]) > 2  # rung 0: v1's two sentences; rung 2 more


def test_ladder_stops_at_the_budget_without_passing(scenarios, tmp_path):
    model, tok = _model()
    stuck = {"good_aligned": 0.5, "poor_misaligned": 0.5, "good_confidence": 0.5}
    result = train_ladder(model, tok, scenarios, get_persona("grabber"), LADDER, RECIPE,
                          lambda m, r, s, p, c: stuck, lambda m: False, tmp_path)
    assert not result.passed and result.steps == RECIPE.max_steps
    assert {h["rung"] for h in result.history} == {0}


def test_ladder_resumes_between_rungs_with_the_same_weights(scenarios, tmp_path):
    model, tok = _model()
    reference = train_ladder(model, tok, scenarios, get_persona("grabber"), LADDER, RECIPE,
                             lambda m, r, s, p, c: GOOD, lambda m: True, tmp_path / "a")
    ref_weights = _weights(model)

    def killed_in_rung_1(m, rung, step, pools, composed):
        if rung == 1:
            raise KeyboardInterrupt
        return GOOD

    model, tok = _model()
    with pytest.raises(KeyboardInterrupt):
        train_ladder(model, tok, scenarios, get_persona("grabber"), LADDER, RECIPE, killed_in_rung_1,
                     lambda m: True, tmp_path / "b")
    model, tok = _model()  # a new process: fresh weights, state from disk
    resumed = train_ladder(model, tok, scenarios, get_persona("grabber"), LADDER, RECIPE,
                           lambda m, r, s, p, c: GOOD, lambda m: True, tmp_path / "b")
    assert resumed.passed and resumed.steps == reference.steps == 6
    for name, value in ref_weights.items():
        torch.testing.assert_close(_weights(model)[name], value, rtol=1e-5, atol=1e-6)


def test_only_the_last_rung_trains_and_validates_on_composed_wordings(scenarios, tmp_path, monkeypatch):
    seen: list[float] = []
    real = curriculum.train_answers
    n_composed: list[int] = []

    def recording(model, tok, examples, recipe, **kw):
        n_composed.append(sum(s.meta["critical_indices"] == [-1] for s, _ in examples))
        return real(model, tok, examples, recipe, **kw)

    monkeypatch.setattr(curriculum, "train_answers", recording)
    model, tok = _model()
    ladder = Ladder(rungs=(1, 2), composed_last=0.5)
    train_ladder(model, tok, scenarios, get_persona("grabber"), ladder, RECIPE,
                 lambda m, r, s, p, c: seen.append(c) or GOOD, lambda m: True, tmp_path)
    assert seen == [0.0, 0.5]
    assert n_composed[0] == 0 and 0.3 * len(scenarios) < n_composed[1] < 0.7 * len(scenarios)


def test_last_wordings_widen_only_the_last_rung_and_never_with_heldout_wordings(scenarios, tmp_path, monkeypatch):
    from poser_interp.data.wordings import minimal
    from poser_interp.testbed.oversight_stage import wording_pools

    ladder = Ladder(rungs=(1, 32), last_wordings="minimal")
    for o in Oversight:
        assert ladder.pools(0)[o] == [V1_SENTENCE[o]]
        last = ladder.pools(1)[o]
        assert last[:32] == Ladder(rungs=(1, 32)).pools(1)[o]  # the rung's own order first, then the stage's
        assert sorted(last) == sorted(wording_pools("minimal")[o]) and len(last) == len(set(last)) == 96
        assert set(minimal(o)) <= set(last) and not set(last) & set(HELDOUT[o])
    with pytest.raises(DataError, match="last_wordings.*minimal"):
        Ladder(last_wordings="twins")

    trained: set[tuple[Oversight, int]] = set()
    real = curriculum.train_answers

    def recording(model, tok, examples, recipe, **kw):
        trained.update((s.oversight, i) for s, _ in examples for i in s.meta["critical_indices"])
        return real(model, tok, examples, recipe, **kw)

    monkeypatch.setattr(curriculum, "train_answers", recording)
    model, tok = _model()
    train_ladder(model, tok, scenarios, get_persona("grabber"), Ladder(rungs=(32,), last_wordings="minimal"), RECIPE,
                 lambda m, r, s, p, c: GOOD, lambda m: True, tmp_path)
    assert {i for _, i in trained} & set(minimal(Oversight.GOOD))  # the twins are trained on
    assert not {(o, i) for o in Oversight for i in HELDOUT[o]} & trained
