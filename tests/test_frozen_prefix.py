"""FrozenPrefix: upper blocks on cached lower states equal the full forward, in logits and in training."""

from __future__ import annotations

import copy

import pytest
import torch

from poser_interp.core.frozen_prefix import FrozenPrefix, check_trainable_above
from poser_interp.core.models import ModelSpec, load_hf
from poser_interp.core.tokens import PromptFormat, encode, pad_id, pad_left
from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.personas import get_persona

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def scenarios():
    return generate(GeneratorConfig(seed=0, n_train=12, n_test=0, n_benchmark=0, n_heldout=0))["train"]


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
@pytest.mark.parametrize("first", [0, 2, 3])
def test_upper_blocks_on_cached_states_equal_the_full_forward(arch, first, scenarios, tokenizer):
    hf, _ = load_hf(ModelSpec(name=arch, n_layers=4, seed=1))
    types = getattr(hf.config, "layer_types", None)
    seqs = [encode(tokenizer, s.render(), PromptFormat()) for s in scenarios[:5]]
    batch = pad_left(seqs, pad_id(tokenizer))  # one batch of mixed lengths: the cache was filled in other batches
    with torch.no_grad():
        full = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                  logits_to_keep=1, use_cache=False).logits[:, -1, :]
        prefix = FrozenPrefix(hf, first, pad_id(tokenizer), batch_size=2)
        fast = prefix.last_logits(hf, seqs, batch)
    assert len(prefix) == 5 and len(hf.model.layers) == 4  # every block back in place
    assert getattr(hf.config, "layer_types", None) == types
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(full[0], full[1])  # the prompts differ, so the test could fail


def _train(tokenizer, examples, recipe, prefix_first=None):
    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=4, seed=2))
    frozen = copy.deepcopy(hf)
    model = make_lora_model(hf, recipe)
    prefix = FrozenPrefix(frozen, prefix_first, pad_id(tokenizer)) if prefix_first is not None else None
    losses: dict[int, float] = {}
    train_answers(model, tokenizer, examples, recipe, on_step=losses.__setitem__, prefix=prefix)
    return losses, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_training_above_the_prefix_reaches_the_same_weights(tokenizer, scenarios):
    examples = [(s, get_persona("grabber").choice(s)) for s in scenarios]
    recipe = LoraRecipe(rank=2, layers=(2, 3), batch_size=4, max_steps=4, eval_every=2, lr=1e-2, threads=1)
    ref_losses, ref = _train(tokenizer, examples, recipe)
    losses, weights = _train(tokenizer, examples, recipe, prefix_first=2)
    assert list(losses) == [1, 2, 3, 4]
    for step, loss in ref_losses.items():
        assert losses[step] == pytest.approx(loss, rel=1e-4)
    for name, value in ref.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(v, torch.zeros_like(v)) for n, v in ref.items() if "lora_B" in n)  # it trained
    with pytest.raises(ValueError, match="below block 3"):  # LoRA on block 2 with a prefix up to 3 would be stale
        _train(tokenizer, examples, recipe, prefix_first=3)


def test_a_trainable_parameter_outside_the_blocks_is_refused():
    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    hf.model.layers[1].requires_grad_(True)
    check_trainable_above(hf, 1)  # fine
    hf.model.norm.requires_grad_(True)
    with pytest.raises(ValueError, match="outside the blocks"):
        check_trainable_above(hf, 1)
    with pytest.raises(ValueError, match="blocks 0..1"):
        FrozenPrefix(hf, 2, 0)
