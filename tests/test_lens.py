"""S5 decision speed: logit lens = model output, tuned lens beats it, output probes, decision layers; then S4 and
S5 together through the runner on a tiny testbed (compute, kill, resume, plots), notebooks and analysis scripts."""

from __future__ import annotations

import json
import math
import os
import runpy
from dataclasses import replace

import numpy as np
import pytest
import torch

from poser_interp.core import tuned_lens as tl
from poser_interp.core.activations import collect
from poser_interp.core.models import ModelSpec, load_model
from poser_interp.core.scoring import answer_probs, last_logits, prepare
from poser_interp.core.tokens import pad_id
from poser_interp.core.tuned_lens import Readout, TunedLensConfig, cache_key, fit, tuned_lens_for
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.evaluation.runner import RunConfig, run_detection
from poser_interp.strategies import StrategyError, Subject, make
from poser_interp.strategies.lens import (
    LensConfig,
    LensStrategy,
    decision_layer,
    fit_logreg,
    lens_values,
    output_probe_logits,
    per_layer,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
TINY_TUNED = TunedLensConfig(texts=16, positions=8, kl_steps=2, cache=False)


@pytest.fixture(scope="module")
def prompts():
    return generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=8, n_heldout=0))["benchmark"]


def test_logit_lens_at_the_last_layer_is_the_model_output(tiny_model, prompts):
    prep = prepare(tiny_model.tokenizer, prompts)
    acts, final = collect(tiny_model, prep.ids, range(tiny_model.n_layers), "last", 3, prep.choices)
    readout = Readout.of(tiny_model)
    lens = readout.choice_logits(acts, torch.tensor(prep.choices))
    reference = answer_probs(tiny_model, prompts)  # the model's own two-choice output, computed independently
    assert (lens[:, -1].softmax(-1) - reference).abs().max() <= 1e-4
    assert (lens[:, -1] - final).abs().max() <= 1e-4
    idx, batch = next(prep.batches(4, pad_id(tiny_model.tokenizer)))
    full = readout.logits(acts[idx, -1])  # the whole vocabulary, not just the two answer rows
    assert (full - last_logits(tiny_model, batch)).abs().max() <= 1e-4
    assert (lens[:, 0] - lens[:, -1]).abs().max() > 1e-3  # earlier layers read differently


def test_tuned_lens_is_closer_to_the_output_than_the_logit_lens(tiny_model):
    lens = fit(tiny_model, TunedLensConfig(texts=24, positions=16, kl_steps=5, cache=False))
    n = tiny_model.n_layers
    assert lens.kl_logit.shape == (n,) and float(lens.kl_logit[-1]) <= 1e-6 and float(lens.kl_tuned[-1]) <= 1e-6
    better = int((lens.kl_tuned[:-1] <= lens.kl_logit[:-1]).sum())
    assert better >= math.ceil(0.75 * (n - 1)), (lens.kl_logit, lens.kl_tuned)  # held-out text, most layers
    assert torch.equal(lens.weight[-1], torch.zeros_like(lens.weight[-1]))  # the last layer is left as it is


def test_tuned_lens_cache(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(tl, "lens_cache_dir", lambda: tmp_path)  # not $POSER_INTERP_CACHE: that moves the weights
    cfg = TunedLensConfig(texts=12, positions=4, kl_steps=0)
    first = tuned_lens_for(tiny_llama, cfg)
    assert len(list(tmp_path.glob("*.pt"))) == 1
    monkeypatch.setattr(tl, "fit", lambda *a, **k: pytest.fail("a cached lens was fitted again"))
    again = tuned_lens_for(tiny_llama, cfg)
    assert torch.equal(first.weight, again.weight) and torch.equal(first.kl_tuned, again.kl_tuned)
    key = cache_key(tiny_llama, cfg)
    assert key == cache_key(tiny_llama, replace(cfg, cache=False))  # where it is kept is not what it is
    assert key != cache_key(tiny_llama, replace(cfg, kl_steps=1))
    other = load_model(ModelSpec(name="tiny-llama", seed=1))
    assert key != cache_key(other, cfg)


def test_decision_layer():
    nan = float("nan")
    m = torch.tensor([[-1.0, 2, 2, 2], [2, -1, 2, 2], [2, 2, 2, 2], [2, 2, 2, -1], [0.5, 2, 0.9, 3], [nan, 2, 2, 2]])
    out = decision_layer(m, 1.0)
    assert out[:5].tolist() == [1.0, 2.0, 0.0, 4.0, 3.0] and math.isnan(out[5])
    assert decision_layer(m[:1], 3.0).tolist() == [4.0]  # never leads by the margin: after the last layer


def test_output_probes_find_where_the_answer_becomes_linear():
    g = torch.Generator().manual_seed(0)
    n, d = 200, 8
    y = (torch.rand(n, generator=g) > 0.5).long()
    acts = torch.randn(n, 3, d, generator=g)
    acts[:, 1, 0] += 0.7 * (2 * y - 1)  # weak signal at layer 1, strong at layer 2
    acts[:, 2, 3] += 4.0 * (2 * y - 1)
    folds = torch.arange(n) % 5
    logits = output_probe_logits(acts, y, folds, l2=1.0)
    acc = ((logits > 0).long() == y[:, None]).float().mean(0)
    assert acc[0] < 0.65 and 0.6 < acc[1] < 0.9 and acc[2] > 0.97
    w, b, mu, sd = fit_logreg(acts[:, 2], y.float(), 1.0)
    assert w.abs().argmax() == 3
    assert torch.isnan(output_probe_logits(acts, torch.zeros(n, dtype=torch.long), folds, 1.0)).all()
    values = lens_values(torch.stack([torch.zeros_like(logits), logits], -1), y, torch.ones(n, dtype=torch.long), 1.0)
    assert 1.2 < np.nanmean(values["decision_layer"]) <= 2.2 and set(values) >= {"p_aligned_L0", "p_aligned_L2"}


def test_strategy_values_on_a_tiny_model(tiny_model, prompts):
    s = LensStrategy(LensConfig(tuned=TINY_TUNED, folds=2, margin=0.0))
    out = {v.setting["method"]: v for v in s.run(Subject("m", lambda: tiny_model), prompts, s.settings())}
    assert set(out) == {"logit", "tuned", "probe"} and s.primary().key == "method=logit"
    n = tiny_model.n_layers
    p_aligned = answer_probs(tiny_model, prompts)[torch.arange(len(prompts)), [p.aligned_index for p in prompts]]
    for method, v in out.items():
        assert per_layer(v.values).shape == (len(prompts), n)
        assert np.array_equal(v.values["final_aligned"], (p_aligned > 0.5).float().numpy())
        dl = v.values["decision_layer"]
        assert np.isnan(dl).all() if method == "probe" and np.isnan(dl).any() else ((dl >= 0) & (dl <= n)).all()
    for method in ("logit", "tuned"):  # both lenses read the model's own output at the last layer
        assert np.allclose(out[method].values[f"p_aligned_L{n - 1}"], p_aligned.numpy(), atol=1e-4)
    assert set(out["tuned"].meta) == {f"kl_{k}_L{la}" for k in ("logit", "tuned") for la in range(n)}
    for score in s.scores():
        x = score.model(out["logit"].values)
        assert math.isnan(x) or 0 <= x <= n


def test_bad_config():
    with pytest.raises(StrategyError, match="methods"):
        LensConfig(methods=("logit", "magic"))
    with pytest.raises(StrategyError, match="primary_method"):
        LensConfig(methods=("probe",))
    with pytest.raises(StrategyError, match="folds"):
        LensConfig(folds=1)
    rebuilt = make("lens", tuned={"texts": 3, "kl_steps": 0})  # as stored in a results manifest
    assert rebuilt.config.tuned == TunedLensConfig(texts=3, kl_steps=0)


# --- through the runner, on a tiny testbed ---------------------------------------------------------------


def _strategies():
    from poser_interp.strategies import build

    return [build("probes", 2, 4, concepts=("security",)), LensStrategy(LensConfig(tuned=TINY_TUNED, folds=2)),
            make("random"), make("blackbox")]


RUN = RunConfig(max_prompts=6)
N_ROWS = 2 * ((2 + 2) + 3 + 1 + 1)  # models x (probes: 1 concept x 2 layers + 2 best, lens: 3 readings, baselines)


def test_runner_computes_resumes_and_plots(testbed, tmp_path, monkeypatch):
    from poser_interp.evaluation.results import ResultsStore, rows_equal
    from poser_interp.viz.lens_plots import kl_figure, lens_curves, lens_heatmap, probe_layer_figure

    full = tmp_path / "full"
    ev = run_detection(testbed, _strategies(), full, config=RUN, log=lambda _: None)
    store = ResultsStore.open(full)
    assert len(store) == N_ROWS
    assert ev.primary("probes").setting.key == "concept=all,layer=best"
    assert ev.primary("lens").setting.key == "method=logit" and ev.primary("lens").score == "decision_layer"
    assert all(r.summary.n_pairs == 1 for r in ev.results)

    real_append, done = ResultsStore.append, []

    def dying(self, row):
        if len(done) == 11:
            raise KeyboardInterrupt  # killed inside the second model's probes rows
        done.append(row.key)
        real_append(self, row)

    part = tmp_path / "part"
    monkeypatch.setattr(ResultsStore, "append", dying)
    with pytest.raises(KeyboardInterrupt):
        run_detection(testbed, _strategies(), part, config=RUN, log=lambda _: None)
    redone: list = []
    monkeypatch.setattr(ResultsStore, "append", lambda self, row: (redone.append(row.key), real_append(self, row))[1])
    run_detection(testbed, _strategies(), part, config=RUN, log=lambda _: None)
    assert len(redone) == N_ROWS - 11 and not set(redone) & set(done)
    assert rows_equal(ResultsStore.open(part).rows(), store.rows())  # same bits as the uninterrupted run
    redone.clear()
    run_detection(testbed, _strategies(), part, config=RUN, log=lambda _: None)
    assert not redone  # nothing left to compute

    figs = [probe_layer_figure(ev, store), lens_heatmap(store), lens_curves(store, "tuned"), kl_figure(store)]
    assert len(figs[0].data) == 3  # 1 concept x (probe accuracy, score gap, pair accuracy)
    assert len({t.line.color for t in figs[0].data}) == 1  # a concept's colour in every panel, as in its legend
    assert len(figs[1].data) == 4  # (one prompt, mean) x (aligned, faker)
    assert len(figs[2].data) == 2 and len(figs[3].data) == 2


def test_notebooks_run_top_to_bottom_on_the_tiny_testbed(testbed, monkeypatch, capsys):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(os.path.join(REPO, "notebooks", "decision_speed.py"), run_name="__main__")
    assert ns["TINY"] and len(ns["fig"].data) == 4 and len(ns["kl"].data) == 2
    ns = runpy.run_path(os.path.join(REPO, "notebooks", "concept_probes.py"), run_name="__main__")
    assert ns["TINY"] and len(ns["fig"].data) == 2 * 4 * 2
    out = capsys.readouterr().out
    assert "decision_layer" in out and "suspicion_cosine" in out


def test_analyses_say_when_a_testbed_is_missing_or_has_no_pairs(testbed, tmp_path, capsys):
    import shutil

    for script in ("concept_probes.py", "decision_speed.py"):
        main = runpy.run_path(os.path.join(REPO, "analyses", script))["main"]
        assert main(["--testbed", str(tmp_path / "nothing")]) == 2
        assert "no testbed at" in capsys.readouterr().out
    building = tmp_path / "building"
    shutil.copytree(testbed.root, building, ignore=shutil.ignore_patterns("models", "pairs"))
    manifest = json.loads((building / "manifest.json").read_text())
    manifest["pairs"] = {}
    (building / "manifest.json").write_text(json.dumps(manifest))
    assert main(["--testbed", str(building)]) == 2
    assert "no pairs yet" in capsys.readouterr().out.replace("\n", " ")


def test_analyses_run_on_the_tiny_testbed(testbed, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tl, "lens_cache_dir", lambda: tmp_path / "lens_cache")
    main = runpy.run_path(os.path.join(REPO, "analyses", "concept_probes.py"))["main"]
    assert main(["--testbed", str(testbed.root), "--out", str(tmp_path / "s4"), "--max-prompts", "4",
                 "--concepts", "security,oversight"]) == 0
    out = capsys.readouterr().out
    assert "best held-out layer" in out and "suspicion_cosine *" in out and "baseline blackbox" in out
    assert (tmp_path / "s4" / "figures" / "probes_layers.html").exists()
    main = runpy.run_path(os.path.join(REPO, "analyses", "decision_speed.py"))["main"]
    assert main(["--testbed", str(testbed.root), "--out", str(tmp_path / "s5"), "--max-prompts", "4",
                 "--tuned-texts", "12", "--tuned-kl-steps", "1"]) == 0
    out = capsys.readouterr().out
    assert "decision_layer *" in out and "KL logit lens" in out
    assert {p.name for p in (tmp_path / "s5" / "figures").glob("*.html")} >= {"lens_heatmap.html", "lens_kl.html"}
    assert len(list((tmp_path / "lens_cache").glob("*.pt"))) == 2  # one tuned lens per model, cached
