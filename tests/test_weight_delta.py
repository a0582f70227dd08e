"""The weight-change norm: LoRA formula against the merged weights, the training term that matches it, and the
`weight_delta` baseline."""

from __future__ import annotations

import pytest
import torch

from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
from poser_interp.core.weight_delta import (
    adapter_delta_norm,
    checkpoint_delta_norm,
    lora_delta_norm,
    state_delta_norm,
)
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.personas import get_persona


def _tiny_lora(seed: int = 0, rank: int = 2):
    from poser_interp.core.models import ModelSpec, load_hf

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    model = make_lora_model(hf, LoraRecipe(rank=rank, seed=seed))
    with torch.no_grad():  # peft starts B at zero (no change): give every B a random value
        g = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _brute_norm(model) -> float:
    """|| merged weights - base weights || over every parameter, by materialising the merge."""
    base = {n.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
            for n, p in model.named_parameters() if "lora_" not in n}
    merged = model.merge_and_unload()
    return state_delta_norm(merged.state_dict(), base)


def test_lora_norm_equals_the_merged_change_and_the_saved_adapter(tmp_path):
    model = _tiny_lora()
    formula = float(lora_delta_norm(model).detach())
    model.save_pretrained(tmp_path / "adapter")
    saved = adapter_delta_norm(tmp_path / "adapter")
    assert formula > 0
    assert saved == pytest.approx(formula, rel=1e-5)
    assert _brute_norm(model) == pytest.approx(formula, rel=1e-4)


def test_checkpoint_norm_reads_two_saved_folders(tmp_path):
    from poser_interp.core.models import ModelSpec, load_hf

    base, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    base.save_pretrained(tmp_path / "base")
    with torch.no_grad():
        base.model.layers[0].mlp.up_proj.weight.add_(0.5)
    base.save_pretrained(tmp_path / "tuned")
    n = base.model.layers[0].mlp.up_proj.weight.numel()
    assert checkpoint_delta_norm(tmp_path / "tuned", tmp_path / "base") == pytest.approx(0.5 * n ** 0.5, rel=1e-5)
    assert checkpoint_delta_norm(tmp_path / "base", tmp_path / "base") == 0.0
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint_delta_norm(tmp_path, tmp_path / "base")


def _examples(n: int = 24):
    scenarios = generate(GeneratorConfig(seed=0, n_train=n, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    return [(s, get_persona("grabber").choice(s)) for s in scenarios]


def test_norm_term_off_never_computes_the_norm(tokenizer, monkeypatch):
    """Off (the default) the loop is the one before the term existed: the norm is never computed, the history has
    no norm column, and a checkpoint's resumable recipe omits the new fields (older checkpoints resume)."""
    import poser_interp.core.weight_delta as wd
    from poser_interp.core.training import _resumable

    def boom(model):
        raise AssertionError("norm computed with the term off")

    monkeypatch.setattr(wd, "lora_delta_norm", boom)
    recipe = LoraRecipe(rank=2, batch_size=4, max_steps=4, eval_every=2, min_steps=0, threads=1, lr=1e-2)
    model = _tiny_lora()
    result = train_answers(model, tokenizer, _examples(), recipe, check=lambda m, s: False)
    assert all("delta_norm" not in h for h in result.history)
    assert not any(k.startswith("delta_norm") for k in _resumable(recipe))


def test_norm_term_holds_the_change_at_its_target_and_gates_the_stop(tokenizer):
    start = float(lora_delta_norm(_tiny_lora()).detach())
    target = 1.5 * start
    recipe = LoraRecipe(rank=2, batch_size=4, max_steps=60, eval_every=5, min_steps=0, threads=1, lr=1e-2,
                        delta_norm_target=target, delta_norm_weight=50.0, delta_norm_tol=0.03)
    model = _tiny_lora()
    result = train_answers(model, tokenizer, _examples(), recipe, check=lambda m, s: True)
    # the behaviour check passes at once; the stop waited for the norm to come within 3% of the target
    norms = [h["delta_norm"] for h in result.history]
    assert result.passed and abs(norms[-1] / target - 1) <= 0.03
    # then B was rescaled so the change has exactly the target norm (the side it came from is no cue)
    assert float(lora_delta_norm(model).detach()) == pytest.approx(target, rel=1e-5)
    assert len(norms) > 1 and abs(norms[0] / target - 1) > 0.03  # not within tolerance at the first check


@pytest.mark.parametrize("bad", [{"delta_norm_target": 0.0}, {"delta_norm_tol": 1.5}, {"delta_norm_weight": -1.0}])
def test_bad_norm_options_are_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LoraRecipe(**bad)


def test_weight_delta_is_a_registered_baseline():
    from poser_interp.strategies.registry import baseline_names, known

    assert "weight_delta" in baseline_names() and "weight_delta" in known()
    assert set(baseline_names()) == {"random", "blackbox", "weight_delta"}
