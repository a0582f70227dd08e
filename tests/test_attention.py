"""S6 attentiveness: fact token spans, saliency = finite differences, attention mass, counterfactual, runner."""

from __future__ import annotations

import dataclasses
import functools
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from poser_interp.core.tokens import encode, pad_id, pad_left
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.scenario import Fact, FactRole
from poser_interp.errors import LayerError
from poser_interp.evaluation.results import ROWS, ResultsStore, rows_equal
from poser_interp.evaluation.runner import run_detection
from poser_interp.strategies import StrategyError, Subject, make
from poser_interp.strategies.attention import counterfactual_texts, critical_tokens, fact_spans, saliency
from poser_interp.viz.attention_plots import kind_difference_heatmap, setting_heatmap, setting_lines

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
SMALL = dict(layers=(0, 1), heads=(0, 3), primary_layer=1, batch_size=3)


@pytest.fixture(scope="module")
def prompts():
    return generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=4, n_heldout=0))["benchmark"]


def test_critical_token_mask_covers_exactly_the_critical_facts(tokenizer, prompts):
    for s in [prompts[0], dataclasses.replace(prompts[1], system_message="")]:
        ids, mask = critical_tokens(tokenizer, s)
        assert ids == encode(tokenizer, s.render()) and len(mask) == len(ids)
        inside = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if m])
        outside = tokenizer.decode([i for i, m in zip(ids, mask, strict=True) if not m])
        for fact in s.facts_with_role(FactRole.CRITICAL):
            assert fact.text in inside and fact.text not in outside
        assert all(f.text not in inside for f in s.facts if f.role != FactRole.CRITICAL)
        (a, b), = fact_spans(s)
        assert s.render()[a:b] == s.facts_with_role(FactRole.CRITICAL)[0].text


def test_saliency_matches_finite_differences(tiny_llama, prompts):
    s = prompts[0]
    ids, _ = critical_tokens(tiny_llama.tokenizer, s)
    short = encode(tiny_llama.tokenizer, prompts[2].render())
    batch = pad_left([ids, short], pad_id(tiny_llama.tokenizer))  # left padding in row 1
    target = [s.choice_tokens(tiny_llama.tokenizer)[1 - s.aligned_index]] * 2
    grad = saliency(tiny_llama, batch, target)
    gen = torch.Generator().manual_seed(0)

    def logit(pos: int, delta: torch.Tensor) -> float:
        def add(act, hook=None):
            act = act.clone()
            act[0, pos] += delta
            return act

        with torch.no_grad(), tiny_llama.bridge.hooks(fwd_hooks=[("hook_embed", add)]):
            out = tiny_llama.bridge(batch.input_ids, attention_mask=batch.attention_mask,
                                    position_ids=batch.position_ids, logits_to_keep=1)
        return float(out[0, -1, target[0]].double())

    for pos in (0, len(ids) // 2, len(ids) - 1):
        v = torch.randn(tiny_llama.d_model, generator=gen)
        v, eps = v / v.norm(), 1e-3  # a small step: the embeddings have norm ~0.2 (RMSNorm is nonlinear)
        fd = (logit(pos, eps * v) - logit(pos, -eps * v)) / (2 * eps)
        assert fd == pytest.approx(float(grad[0, pos] @ v), rel=1e-2, abs=1e-4)
    pad = batch.attention_mask[1] == 0
    assert pad.any() and (grad[1][pad] == 0).all()  # padding gets no saliency
    assert all(not hp._forward_hooks for hp in tiny_llama.bridge.hook_dict.values())


def test_attention_mass_matches_the_cached_pattern(tiny_llama, prompts):
    st = make("attention", variants=("attention",), **SMALL)
    rows = {v.setting.key: v for v in st.run(Subject("m", lambda: tiny_llama), prompts, st.settings())}
    for i in (0, 3):
        ids, mask = critical_tokens(tiny_llama.tokenizer, prompts[i])
        _, cache = tiny_llama.bridge.run_with_cache(torch.tensor([ids]))
        last = cache["blocks.1.attn.hook_pattern"][0, :, -1, :]
        assert torch.allclose(last.sum(-1), torch.ones(last.shape[0]), atol=1e-5)
        want = last[:, torch.tensor(mask)].sum(-1)
        assert rows["head=3,layer=1,variant=attention"].values["attentiveness"][i] == pytest.approx(float(want[3]),
                                                                                                   abs=1e-5)
        assert rows["head=mean,layer=1,variant=attention"].values["attentiveness"][i] == pytest.approx(
            float(want.mean()), abs=1e-5)


def test_counterfactual_keeps_wrapper_answer_order_and_final_token(tokenizer, prompts):
    texts, dropped = counterfactual_texts(tokenizer, prompts)
    for s, t, d in zip(prompts, texts, dropped, strict=True):
        crit = s.facts_with_role(FactRole.CRITICAL)[0].text
        assert crit in t and crit not in d
        assert t.split("\n\nOptions:")[1] == d.split("\n\nOptions:")[1]  # options, answer order, question
        assert t.split("\n")[0] == d.split("\n")[0]  # wrapper intro
        assert encode(tokenizer, t)[-3:] == encode(tokenizer, d)[-3:]
        assert s.choice_tokens(tokenizer) == dataclasses.replace(s).choice_tokens(tokenizer)


def test_bad_input_is_refused_with_the_fix(tiny_llama, prompts):
    with pytest.raises(StrategyError, match="unknown variant 'gaze'"):
        make("attention", variants=("gaze",))
    with pytest.raises(StrategyError, match="primary_layer"):
        make("attention", variants=("attention",), layers=(0,), primary_variant="attention", primary_layer=1)
    subject = Subject("m", lambda: tiny_llama)
    st = make("attention", layers=(5,), heads=(0,), primary_layer=5)
    with pytest.raises(LayerError, match="out of range"):
        list(st.run(subject, prompts, st.settings()))
    st = make("attention", variants=("attention",), layers=(0,), heads=(7,), primary_layer=0)
    with pytest.raises(StrategyError, match="head 7 is out of range"):
        list(st.run(subject, prompts, st.settings()))
    no_crit = dataclasses.replace(prompts[0], facts=tuple(f for f in prompts[0].facts if f.role != "critical")
                                  + (Fact("It is sunny.", FactRole.UNLABELLED),))
    st = make("attention", **SMALL)
    with pytest.raises(StrategyError, match="no `critical` facts"):
        list(st.run(subject, [no_crit], st.settings()))
    assert list(st.run(subject, [], st.settings())) == []


def test_runs_through_the_runner_and_resumes(testbed, tmp_path):
    load = functools.cache(testbed.load)  # the resumed run reuses the loaded models
    st = [make("attention", **SMALL), make("blackbox")]
    ev = run_detection(testbed, st, tmp_path / "full", log=lambda _: None, load=load)
    store = ResultsStore.open(tmp_path / "full")
    n_settings = 1 + 2 * 3 + 2
    assert len(store.rows("attention")) == 2 * n_settings
    assert ev.primary("attention").setting.key == "variant=saliency"
    assert np.isfinite(ev.primary("attention").summary.accuracy)
    lines = (tmp_path / "full" / ROWS).read_text().splitlines(keepends=True)
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "manifest.json").write_text((tmp_path / "full" / "manifest.json").read_text())
    (tmp_path / "cut" / ROWS).write_text("".join(lines[:5]))  # as if killed after 5 rows
    run_detection(testbed, st, tmp_path / "cut", log=lambda _: None, load=load)
    assert rows_equal(ResultsStore.open(tmp_path / "cut").rows(), store.rows())  # resumed = uninterrupted
    figs = [setting_heatmap(ev, "attention", "head", "layer", where={"variant": "attention"}),
            setting_lines(ev, "attention", "layer", "variant", where={"head": ("mean", None)}),
            kind_difference_heatmap(store, "attention", "attentiveness", "head", "layer", {"variant": "attention"})]
    assert all(f.data for f in figs)
    z = np.array(figs[0].data[0].z, dtype=float)
    assert z.shape == (2, 3) and np.isfinite(z).all()  # layers x (heads 0, 3, mean)


def test_notebook_runs_on_a_tiny_testbed(testbed, monkeypatch):
    monkeypatch.setenv("POSER_INTERP_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("POSER_INTERP_TINY_TESTBED", str(testbed.root))
    ns = runpy.run_path(str(REPO / "notebooks" / "attentiveness.py"))
    assert ns["ev"].strategies()[0] == "attention" and ns["figures"]
