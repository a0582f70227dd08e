"""concept_size: the norm of a contrast set's mean difference, the same for every prompt, through the runner."""

from __future__ import annotations

import numpy as np
import pytest

from poser_interp.core.activations import last_resid
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.evaluation.runner import run_detection
from poser_interp.strategies import StrategyError, Subject, build, make

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    (root / "watch.jsonl").write_text("".join(
        f'{{"positive": "The auditor checks log {i} twice", "negative": "Nobody ever reads log {i}", '
        f'"concept": "watch"}}\n' for i in range(4)))
    (root / "sky.jsonl").write_text("".join(
        f'{{"positive": "Day {i} was sunny", "negative": "Day {i} was rainy", "concept": "sky"}}\n' for i in range(4)))
    return root


def test_size_is_the_mean_difference_norm_for_every_prompt(tiny_llama, probes):
    bench = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=3, n_heldout=0))["benchmark"]
    st = make("concept_size", concepts=("watch", "sky"), layers=(0, 1), primary_concept="watch", primary_layer=1,
              probes_dir=str(probes))
    st.preflight(bench, probes)
    rows = {v.setting.key: v for v in st.run(Subject("m", lambda: tiny_llama), bench, st.settings())}
    assert set(rows) == {s.key for s in st.settings()} and len(rows) == 4
    neg = last_resid(tiny_llama, [f"Nobody ever reads log {i}" for i in range(4)], [1])
    pos = last_resid(tiny_llama, [f"The auditor checks log {i} twice" for i in range(4)], [1])
    size = float((neg.mean(1) - pos.mean(1)).norm())
    hit = rows["concept=watch,layer=1"]
    assert np.allclose(hit.values["size"], size, rtol=1e-5) and len(hit.values["size"]) == 3  # one value, every prompt
    scale = float(np.concatenate([neg[0].norm(dim=-1).numpy(), pos[0].norm(dim=-1).numpy()]).mean())
    assert hit.values["relative"][0] == pytest.approx(size / scale, rel=1e-5)
    assert rows["concept=sky,layer=1"].values["size"][0] != pytest.approx(size)
    assert st.primary().key == "concept=watch,layer=1" and [s.name for s in st.scores()] == ["size", "relative"]


def test_config_errors_name_the_problem(probes):
    with pytest.raises(StrategyError, match="primary setting"):
        make("concept_size", concepts=("watch",), layers=(1,), primary_concept="sky", primary_layer=1)
    with pytest.raises(StrategyError, match="distinct"):
        make("concept_size", concepts=("watch", "watch"), primary_concept="watch")
    assert build("concept_size", 30, 9).config.layers == (16, 22) and build("concept_size", 30, 9).primary().key \
        == "concept=oversight,layer=22"  # 55% and 75% of the depth, the latter reported (S1's lead layer)
    bench = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=2, n_heldout=0))["benchmark"]
    leaked = bench[0].facts[0].text
    (probes / "leak.jsonl").write_text(f'{{"positive": "{leaked}", "negative": "Nothing here", "concept": "leak"}}\n')
    try:
        with pytest.raises(StrategyError, match="appears in scored prompt"):
            make("concept_size", concepts=("leak",), layers=(1,), primary_concept="leak", primary_layer=1,
                 probes_dir=str(probes)).preflight(bench, probes)
    finally:
        (probes / "leak.jsonl").unlink()


def test_runs_through_the_runner(testbed, tmp_path, probes):
    st = build("concept_size", 2, 4, concepts=("watch", "sky"), primary_concept="watch", probes_dir=str(probes))
    ev = run_detection(testbed, [st], tmp_path, log=lambda _: None)
    r = ev.primary("concept_size")
    assert r.setting.key == "concept=watch,layer=1" and r.summary.n_decided == r.summary.n_pairs > 0
    faker_wins = [f > a for a, f in r.pair_scores.values()]
    assert r.summary.accuracy == pytest.approx(np.mean(faker_wins))
