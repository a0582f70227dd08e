"""S4 concept probes: mass-mean directions, held-out accuracy, contrast-data loaders and hygiene, the strategy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from poser_interp.data.concepts import (
    ContrastSet,
    check_not_scored,
    load_contrast_dir,
    load_contrast_file,
    load_poser_contrast,
)
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.errors import DataError, LayerError
from poser_interp.strategies import StrategyError, Subject, build, make
from poser_interp.strategies.probes import (
    ProbesConfig,
    ProbesStrategy,
    best_layer,
    fit_probe,
    mass_mean,
    suspicion,
)

CONCEPTS = ("security", "oversight", "behaviour", "power")

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


def _planted(n: int, d: int = 32, layers: int = 3, strength: float = 2.0, seed: int = 0):
    """Activations whose positive and negative sets differ along one planted unit direction per layer."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(layers, d, generator=g)
    u = u / u.norm(dim=-1, keepdim=True)
    base = torch.randn(d, generator=g) * 3  # a shared offset, as residual streams have
    strength_by_layer = torch.tensor([0.0, strength, 2 * strength])[:layers, None]
    pos = base + torch.randn(n, layers, d, generator=g) + strength_by_layer * u / 2
    neg = base + torch.randn(n, layers, d, generator=g) - strength_by_layer * u / 2
    return pos, neg, u


def test_mass_mean_recovers_the_planted_direction():
    pos, neg, u = _planted(400)
    d = mass_mean(pos, neg)
    cos = torch.nn.functional.cosine_similarity(d, u, dim=-1)
    assert cos[2] > 0.95 and cos[1] > 0.85 and abs(cos[0]) < 0.5  # layer 0 has no signal planted
    same = fit_probe(pos[:300], neg[:300], pos[300:], neg[300:])  # held-out draws of the same distribution
    assert same.accuracy[2] > 0.9 and same.accuracy[1] > 0.75 and 0.3 < same.accuracy[0] < 0.7
    assert same.dprime[2] > same.dprime[1] > same.dprime[0]
    assert best_layer(same) == 2


def test_suspicion_points_to_the_negative_side():
    pos, neg, u = _planted(200)
    probe = fit_probe(pos, neg, pos, neg)
    mid = probe.midpoint
    toward_neg = suspicion((mid - 5 * u)[None], probe)
    toward_pos = suspicion((mid + 5 * u)[None], probe)
    for k in ("susp_cos_mid", "susp_proj"):
        assert (toward_neg[k][0, 1:] > 0).all() and (toward_pos[k][0, 1:] < 0).all()
    assert torch.allclose(suspicion(mid[None], probe)["susp_proj"], torch.zeros(1, 3), atol=1e-5)
    raw = suspicion(neg[:5], probe)["susp_cos"]
    d = probe.direction
    expected = -(neg[:5] * d).sum(-1) / (neg[:5].norm(dim=-1) * d.norm(dim=-1))
    assert torch.allclose(raw, expected, atol=1e-5)


def test_best_layer_breaks_accuracy_ties_by_dprime():
    from poser_interp.strategies.probes import Probe

    z = torch.zeros(3, 2)
    probe = Probe(z, z, torch.tensor([1.0, 1.0, 0.9]), torch.tensor([2.0, 5.0, 9.0]))
    assert best_layer(probe) == 1


# --- data -----------------------------------------------------------------------------------------------
def test_shipped_contrast_sets_are_large_distinct_and_original():
    sets = load_contrast_dir(concepts=CONCEPTS)
    from poser_interp.data import scenario_bank as sb

    bank = {s for v in vars(sb).values() if isinstance(v, tuple) for s in v if isinstance(s, str)}
    for t in sb.TOPICS:
        bank |= {*t.system_messages, *t.contextual, *t.irrelevant, *(m for _, m in t.motivating)}
        bank |= {x for p in t.action_pairs for x in (p.aligned, p.misaligned)}
    seen: set[str] = set()
    for concept in CONCEPTS:
        s = sets[concept]
        assert len(s) >= 60 and s.paired, concept
        texts = s.texts()
        assert len(set(texts)) == len(texts) and not seen & set(texts)
        seen |= set(texts)
    assert not seen & bank  # no sentence of the scenario domain is reused: concept data never hits a prompt


def test_shipped_contrast_sets_share_no_text_with_poser(poser_dir):
    from poser_interp.data.poser_data import load_concept_file

    def grams(t: str, n: int = 6) -> set:
        w = re.findall(r"[a-z']+", t.lower())
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}

    theirs = set().union(*(grams(x) for f in sorted((poser_dir / "concepts").glob("*.json"))
                           for x in load_concept_file(f)))
    ours = [t for s in load_contrast_dir().values() for t in s.texts()]
    assert not [t for t in ours if grams(t) & theirs]


def test_poser_concepts_load_unpaired_and_split(poser_dir):
    s = load_poser_contrast("security", poser_dir)
    assert not s.paired and len(s.positive) >= 5 and len(s.negative) >= 5
    train, held = s.split(0.3)
    assert set(train.positive).isdisjoint(held.positive) and set(train.negative).isdisjoint(held.negative)
    with pytest.raises(DataError, match="no files for concept"):
        load_poser_contrast("power", poser_dir)


def test_split_keeps_pairs_together_and_is_stable():
    s = load_contrast_dir(concepts=["security"])["security"]
    train, held = s.split(0.3, seed=0)
    assert len(held) == round(0.3 * len(s)) and len(train) + len(held) == len(s)
    pairs = dict(zip(s.positive, s.negative, strict=True))
    assert all(pairs[p] == n for p, n in zip(held.positive, held.negative, strict=True))
    assert held == s.split(0.3, seed=0)[1] and held.positive != s.split(0.3, seed=1)[1].positive
    shuffled = ContrastSet("security", s.positive[::-1], s.negative[::-1])
    assert set(shuffled.split(0.3)[1].positive) == set(held.positive)  # by content, not by order


@pytest.mark.parametrize("content,match", [
    (None, "does not exist"),
    ("{not json\n", "not JSON"),
    ('["a", "b"]\n', "expected a JSON object"),
    ('{"positive": "a", "concept": "x"}\n', r"missing or empty field\(s\) \['negative'\]"),
    ('{"positive": "a", "negative": " ", "concept": "x"}\n', "missing or empty"),
    ('{"positive": "same", "negative": "same", "concept": "x"}\n', "are the same"),
    ("\n\n", "holds no pairs"),
])
def test_contrast_file_errors_name_the_fix(tmp_path, content, match):
    path = tmp_path / "c.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match) as e:
        load_contrast_file(path)
    assert "positive" in str(e.value) or "pair" in str(e.value) or "same" in str(e.value)


def test_contrast_dir_errors(tmp_path):
    with pytest.raises(DataError, match="no contrast files"):
        load_contrast_dir(tmp_path)
    line = json.dumps({"positive": "a", "negative": "b", "concept": "x"}) + "\n"
    (tmp_path / "one.jsonl").write_text(line)
    assert len(load_contrast_dir(tmp_path)["x"]) == 1
    with pytest.raises(DataError, match=r"not found .* available: \['x'\]"):
        load_contrast_dir(tmp_path, ["y"])
    (tmp_path / "two.jsonl").write_text(line)
    with pytest.raises(DataError, match="appears in both"):
        load_contrast_dir(tmp_path)
    with pytest.raises(DataError, match="too few examples"):
        ContrastSet("x", ("a",), ("b",)).split(0.3)


# --- the strategy (through the runner: tests/test_lens.py) --------------------------------------------


@pytest.fixture(scope="module")
def prompts():
    return generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=6, n_heldout=0))["benchmark"]


def test_concept_data_never_overlaps_scored_prompts(prompts):
    sets = list(load_contrast_dir().values())
    check_not_scored(sets, prompts)
    leaked = ContrastSet("x", (prompts[2].facts[0].text,), ("something else entirely",))
    with pytest.raises(StrategyError, match=f"appears in scored prompt {prompts[2].id}"):
        check_not_scored([leaked], prompts)


def test_strategy_values_on_a_tiny_model(tiny_model, prompts):
    s = build("probes", tiny_model.n_layers, 4, concepts=("security", "power"))
    assert len(s.settings()) == 2 * tiny_model.n_layers + 3 and s.primary().key == "concept=all,layer=best"
    out = {v.setting.key: v for v in s.run(Subject("m", lambda: tiny_model), prompts, s.settings())}
    assert set(out) == {x.key for x in s.settings()}
    ids = tuple(p.id for p in prompts)
    for v in out.values():
        assert v.prompt_ids == ids and all(np.isfinite(a).all() for a in v.values.values())
    for concept in ("security", "power"):
        best = out[f"concept={concept},layer=best"]
        layer = int(best.meta["layer"])
        same = out[f"concept={concept},layer={layer}"]
        assert best.meta["probe_acc"] == max(out[f"concept={concept},layer={la}"].meta["probe_acc"]
                                             for la in range(tiny_model.n_layers))
        assert all(np.array_equal(best.values[k], same.values[k]) for k in best.values)
        assert same.meta["n_train"] + same.meta["n_heldout"] == len(load_contrast_dir()[concept])
    both = out["concept=all,layer=best"].values["susp_cos"]
    expected = (out["concept=security,layer=best"].values["susp_cos"] +
                out["concept=power,layer=best"].values["susp_cos"]) / 2
    assert np.allclose(both, expected)
    scores = s.scores()
    assert scores[0].name == "suspicion_cosine"
    assert scores[0].model(out["concept=all,layer=best"].values) == pytest.approx(float(np.mean(both)))
    sub = list(s.run(Subject("m", lambda: tiny_model), prompts, [s.primary()]))  # only what is asked
    assert [v.setting for v in sub] == [s.primary()] and np.array_equal(sub[0].values["susp_cos"], both)


def test_mean_position_differs_from_last(tiny_llama, prompts):
    last = ProbesStrategy(ProbesConfig(concepts=("security",), layers=(1,)))
    mean = ProbesStrategy(ProbesConfig(concepts=("security",), layers=(1,), position="mean"))
    a = {v.setting.key: v for v in last.run(Subject("m", lambda: tiny_llama), prompts, last.settings())}
    b = {v.setting.key: v for v in mean.run(Subject("m", lambda: tiny_llama), prompts, mean.settings())}
    assert not np.allclose(a["concept=security,layer=1"].values["susp_cos"],
                           b["concept=security,layer=1"].values["susp_cos"])


def test_bad_layers_and_config(tiny_llama, prompts):
    s = make("probes", concepts=("security",), layers=(0, 7))
    with pytest.raises(LayerError, match="registry.build"):
        list(s.run(Subject("m", lambda: tiny_llama), prompts, s.settings()))
    with pytest.raises(StrategyError, match="primary_concept"):
        ProbesConfig(concepts=("security",), primary_concept="power")
    with pytest.raises(StrategyError, match="reserved"):
        ProbesConfig(concepts=("all",))
    with pytest.raises(StrategyError, match="measure"):
        ProbesConfig(measure="dot")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="not found"):
        ProbesStrategy(ProbesConfig(concepts=("nope",), primary_concept="nope")).contrast_sets()
    assert [s.name for s in make("probes", measure="projection").scores()][0] == "suspicion_projection"
