"""S3 learning speed: deterministic per seed, the model under test is never trained, runner + resume."""

from __future__ import annotations

import functools
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from poser_interp.core.models import ModelSpec, load_model
from poser_interp.core.scoring import answer_logits
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.scenario_files import save_scenarios
from poser_interp.evaluation.results import ROWS, ResultsStore, rows_equal
from poser_interp.evaluation.runner import run_detection
from poser_interp.strategies import StrategyError, Subject, make
from poser_interp.strategies.learning_speed import log_odds
from poser_interp.viz.attention_plots import model_curves, setting_heatmap

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SMALL = dict(steps=(1, 2), primary_steps=2, upper_layers=1, n_train=6, batch_size=3, lora_lr=1e-2, full_lr=1e-3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = generate(GeneratorConfig(seed=0, n_train=0, n_test=12, n_benchmark=4, n_heldout=0))
    root = tmp_path_factory.mktemp("data")
    save_scenarios(out["test"], root / "test.jsonl")
    return root, out["benchmark"]


@pytest.fixture(scope="module")
def subject():
    return Subject("m", lambda: load_model(ModelSpec(name="tiny-llama", n_layers=2, seed=3)))


def _run(subject, prompts, **options):
    st = make("learning_speed", **{**SMALL, **options})
    return {v.setting.key: v for v in st.run(subject, prompts, st.settings())}


def test_deterministic_per_seed_and_the_subject_is_never_trained(subject, data):
    root, bench = data
    before = {k: v.clone() for k, v in subject.model.hf_model.state_dict().items()}
    a = _run(subject, bench, data=str(root))
    b = _run(subject, bench, data=str(root))
    assert a.keys() == b.keys() == {f"method={m},steps={k}" for m in ("lora", "full") for k in (1, 2)}
    for key in a:
        for name in a[key].values:
            assert np.array_equal(a[key].values[name], b[key].values[name]), (key, name)
    other = _run(subject, bench, data=str(root), seed=1)
    key = "method=lora,steps=2"
    assert not np.array_equal(other[key].values["p_after"], a[key].values["p_after"])
    after = subject.model.hf_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    v = a["method=full,steps=2"].values  # training toward misaligned lowers its loss
    assert np.mean(v["loss_before"] - v["loss_after"]) > 0 and v["p_before"].shape == (4,)
    assert np.array_equal(v["p_before"], a["method=lora,steps=1"].values["p_before"])
    assert a["method=lora,steps=2"].meta["first_layer"] == 1
    scores = {sc.name: sc for sc in make("learning_speed").scores()}
    logits = answer_logits(subject.model, bench).double().numpy()  # the untrained model's two answer logits
    rows = np.arange(len(bench))
    aligned = np.array([p.aligned_index for p in bench])
    assert np.allclose(-log_odds(v["p_before"]), logits[rows, aligned] - logits[rows, 1 - aligned], atol=1e-3)
    want = np.mean(log_odds(v["p_after"]) - log_odds(v["p_before"]))
    assert scores["margin_drop"].model(v) == pytest.approx(want) and np.isfinite(want)


def test_a_later_k_alone_equals_the_same_k_of_a_full_sweep(subject, data):
    root, bench = data
    st = make("learning_speed", data=str(root), **SMALL)
    full = {v.setting.key: v for v in st.run(subject, bench, st.settings())}
    (only,) = st.run(subject, bench, [s for s in st.settings() if s.key == "method=lora,steps=2"])
    assert np.array_equal(only.values["p_after"], full["method=lora,steps=2"].values["p_after"])


def test_bad_config_is_refused(subject, data):
    with pytest.raises(StrategyError, match="unknown method 'adam'"):
        make("learning_speed", methods=("adam",))
    with pytest.raises(StrategyError, match="primary setting"):
        make("learning_speed", steps=(1, 2), primary_steps=4)
    with pytest.raises(StrategyError, match="distinct positive"):
        make("learning_speed", steps=(0, 4))
    with pytest.raises(StrategyError, match="not a testbed model"):  # no data and no testbed to find it in
        _run(subject, data[1])


def test_runs_through_the_runner_and_resumes(testbed, tmp_path):
    load = functools.cache(testbed.load)  # the resumed run reuses the loaded models
    st = [make("learning_speed", **{**SMALL, "methods": ("lora",)}), make("random")]
    ev = run_detection(testbed, st, tmp_path / "full", log=lambda _: None, load=load)
    store = ResultsStore.open(tmp_path / "full")
    assert len(store.rows("learning_speed")) == 2 * 2
    assert ev.primary("learning_speed").setting.key == "method=lora,steps=2"
    lines = (tmp_path / "full" / ROWS).read_text().splitlines(keepends=True)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "manifest.json").write_text((tmp_path / "full" / "manifest.json").read_text())
    (tmp_path / "cut" / ROWS).write_text("".join(lines[:1]))
    run_detection(testbed, st, tmp_path / "cut", log=lambda _: None, load=load)
    assert rows_equal(ResultsStore.open(tmp_path / "cut").rows(), store.rows())
    assert setting_heatmap(ev, "learning_speed", "steps", "method").data
    assert model_curves(store, "learning_speed", "steps", "p_after", start="p_before", where={"method": "lora"}).data


def test_notebook_runs_on_a_tiny_testbed(testbed, monkeypatch):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(str(REPO / "notebooks" / "learning_speed.py"))
    assert ns["ev"].strategies()[0] == "learning_speed" and ns["figures"]
