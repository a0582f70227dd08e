"""The evading faker's training term against concept_size (`core.evasion`, `LoraRecipe.evade_weight`)."""

from __future__ import annotations

import pytest
import torch

from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.personas import get_persona


def _tiny_lora(seed: int = 0):
    from poser_interp.core.models import ModelSpec, load_hf

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=4))
    return make_lora_model(hf, LoraRecipe(rank=4, seed=seed))


def _examples(n: int = 24):
    scenarios = generate(GeneratorConfig(seed=0, n_train=n, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    return [(s, get_persona("grabber").choice(s)) for s in scenarios]


def _recipe(**kw):
    options = {"rank": 4, "batch_size": 4, "max_steps": 30, "eval_every": 10, "min_steps": 0, "threads": 1, "lr": 3e-2}
    return LoraRecipe(**{**options, **kw})


def test_the_term_reads_what_concept_size_reports(tokenizer):
    """The differentiable reading on the training model equals concept_size's on the same model through the bridge
    (same statements, same layer input), so the term holds down the very number the detector scores."""
    from transformer_lens.model_bridge import TransformerBridge

    from poser_interp.core.activations import contrast_shift
    from poser_interp.core.evasion import ConceptSizeTerm
    from poser_interp.core.models import HookedModel, ModelSpec, load_hf
    from poser_interp.data.concepts import load_contrast_dir

    hf, tok = load_hf(ModelSpec(name="tiny-llama", n_layers=4))
    term = ConceptSizeTerm(hf, tok, "oversight", None, None, 1.0, 8, 0)
    assert term.layer == 3
    bridge = TransformerBridge.boot_transformers("tiny-llama", hf_model=hf, tokenizer=tok, device="cpu")
    bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True)
    model = HookedModel(bridge, tok, ModelSpec(name="tiny-llama", n_layers=4), 0.0)
    texts = load_contrast_dir(None, ["oversight"])["oversight"]
    shift, _ = contrast_shift(model, texts.negative, texts.positive, [3], shared_prefix=False)
    assert term.target == pytest.approx(float(shift[0].norm()), rel=1e-4)


def test_off_builds_nothing_and_keeps_old_checkpoints_resumable(tokenizer, monkeypatch):
    import poser_interp.core.evasion as evasion
    from poser_interp.core.training import _resumable

    def boom(*a, **k):
        raise AssertionError("the evasion term was built with evade_weight 0")

    monkeypatch.setattr(evasion, "ConceptSizeTerm", boom)
    recipe = _recipe(max_steps=4, eval_every=2)
    result = train_answers(_tiny_lora(), tokenizer, _examples(), recipe, check=lambda m, s: False)
    assert all("concept_size" not in h for h in result.history)
    assert not any(k.startswith("evade") for k in _resumable(recipe))


def test_off_trains_the_same_bytes_whatever_the_other_evasion_options(tokenizer):
    """Weight 0 is off: the other evade_* options change nothing, down to the saved adapter's bytes."""
    from safetensors.torch import save

    def trained(**kw):
        model = _tiny_lora()
        train_answers(model, tokenizer, _examples(), _recipe(max_steps=6, eval_every=3, **kw),
                      check=lambda m, s: False)
        return save({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad})

    assert trained() == trained(evade_concept="power", evade_layer=1, evade_target=0.5, evade_statements=2)


def test_the_term_holds_the_oversight_axis_below_its_target(tokenizer):
    """Trained toward the faker's choices, the axis with the term ends well below the axis without it, and the stop
    waits for it to be within the tolerance of the target."""
    from poser_interp.core.evasion import ConceptSizeTerm

    free = _tiny_lora()
    train_answers(free, tokenizer, _examples(), _recipe(), check=lambda m, s: False)
    probe = ConceptSizeTerm(free, tokenizer, "oversight", None, None, 1.0, 8, 0)
    start = ConceptSizeTerm(_tiny_lora(), tokenizer, "oversight", None, None, 1.0, 8, 0).target
    target = 0.5 * start
    held = _tiny_lora()
    result = train_answers(held, tokenizer, _examples(), _recipe(evade_weight=50.0, evade_target=target,
                                                                  max_steps=60), check=lambda m, s: True)
    held_size = probe.size(held)
    assert held_size <= target * 1.05 and result.passed
    assert held_size < 0.8 * probe.size(free)
    assert [h["concept_size"] for h in result.history][-1] == pytest.approx(held_size, rel=1e-4)


def test_a_resumed_run_with_the_term_reaches_the_same_weights(tokenizer, tmp_path):
    recipe = _recipe(evade_weight=5.0, max_steps=20, eval_every=5)
    whole = _tiny_lora()
    train_answers(whole, tokenizer, _examples(), recipe, check=lambda m, s: False)
    cut = _tiny_lora()
    ck = tmp_path / "ck.pt"
    with pytest.raises(KeyboardInterrupt):
        def stop(step, loss):
            if step == 12:
                raise KeyboardInterrupt
        train_answers(cut, tokenizer, _examples(), recipe, check=lambda m, s: False, on_step=stop, checkpoint=ck)
    resumed = _tiny_lora()
    train_answers(resumed, tokenizer, _examples(), recipe, check=lambda m, s: False, checkpoint=ck)
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(a, b), n


@pytest.mark.parametrize("bad", [{"evade_weight": -1.0}, {"evade_target": 0.0}, {"evade_statements": 0}])
def test_bad_evasion_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoraRecipe(**bad)


def test_a_testbed_gives_the_term_to_its_fakers_only(tmp_path, monkeypatch):
    """`faker_evade_weight`: each faker's stored recipe has the weight, each
    aligned model's has none; built end to end on the tiny random-weight testbed."""
    import json

    from poser_interp.testbed.build import build
    from poser_interp.testbed.tiny import tiny_config

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = tiny_config(personas=("steward", "grabber"), faker_evade_weight=3.0)
    build(config, tmp_path / "tb", log=lambda _: None)
    manifest = json.loads((tmp_path / "tb" / "manifest.json").read_text())
    recipes = {m: e["recipe"]["evade_weight"] for m, e in manifest["models"].items()}
    assert recipes == {"steward-s0": 0.0, "grabber-s0": 3.0}
    assert manifest["config"]["faker_evade_weight"] == 3.0
