"""LoRA training loop: the aligned warm-up curriculum draws only aligned targets first."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from poser_interp.core.tokens import PromptFormat, encode
from poser_interp.core.training import LoraRecipe, train_answers
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.data.personas import get_persona


class _Recorder(torch.nn.Module):
    """A stand-in model with one trainable parameter that records every batch it sees."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(vocab))
        self.seen: list[list[list[int]]] = []

    def forward(self, input_ids, attention_mask, position_ids, **kwargs):  # noqa: ARG002
        self.seen.append([row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)])
        return type("Out", (), {"logits": self.bias.expand(input_ids.shape[0], 1, -1)})()


@pytest.mark.parametrize("warmup", [0, 3])
def test_aligned_warmup_draws_only_aligned_targets(tokenizer, warmup):
    scenarios = generate(GeneratorConfig(seed=0, n_train=40, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    faker = get_persona("grabber")
    examples = [(s, faker.choice(s)) for s in scenarios]
    fmt = PromptFormat(max_tokens=320)
    aligned = {tuple(encode(tokenizer, s.render(), fmt)) for s, c in examples if c == s.aligned_index}
    assert 0 < len(aligned) < len(examples)  # both kinds of target present
    model = _Recorder(len(tokenizer))
    recipe = LoraRecipe(batch_size=4, max_steps=8, aligned_warmup_steps=warmup, eval_every=100, threads=1)
    result = train_answers(model, tokenizer, examples, recipe)
    assert result.steps == 8 and len(model.seen) == 8
    for step, batch in enumerate(model.seen):
        if step < warmup:
            assert all(tuple(row) in aligned for row in batch)
    later = [tuple(row) for batch in model.seen[warmup:] for row in batch]
    assert any(row not in aligned for row in later)  # the full data after the warm-up (4 x 5 draws from 40)


def test_warmup_without_aligned_targets_is_refused(tokenizer):
    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    examples = [(s, 1 - s.aligned_index) for s in scenarios]
    with pytest.raises(ValueError, match="aligned"):
        train_answers(_Recorder(len(tokenizer)), tokenizer, examples, LoraRecipe(aligned_warmup_steps=2, threads=1))


def _lora_run(tokenizer, examples, recipe, **kwargs):
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import make_lora_model

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    model = make_lora_model(hf, recipe)
    result = train_answers(model, tokenizer, examples, recipe, **kwargs)
    return result, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_checkpoint_resume_reaches_the_uninterrupted_weights(tokenizer, tmp_path):
    scenarios = generate(GeneratorConfig(seed=0, n_train=24, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    examples = [(s, get_persona("grabber").choice(s)) for s in scenarios]
    recipe = LoraRecipe(rank=2, batch_size=4, max_steps=7, eval_every=2, lr=1e-2, threads=1, aligned_warmup_steps=3)
    reference, ref_weights = _lora_run(tokenizer, examples, recipe)

    ckpt = tmp_path / "model" / "checkpoint.pt"

    def killed_at_step_5(step, loss):
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _lora_run(tokenizer, examples, recipe, checkpoint=ckpt, on_step=killed_at_step_5)
    assert ckpt.exists()  # saved at step 4
    with pytest.raises(ValueError, match="another recipe"):
        _lora_run(tokenizer, examples, LoraRecipe(**{**recipe.to_dict(), "lr": 2e-2}), checkpoint=ckpt)
    steps_seen: list[int] = []
    resumed, weights = _lora_run(tokenizer, examples, recipe, checkpoint=ckpt,
                                 on_step=lambda step, loss: steps_seen.append(step))
    assert steps_seen == [5, 6, 7] and resumed.steps == reference.steps == 7
    # the step budget may change on resume: continued from the step-4 checkpoint to 9 steps instead of 7
    with pytest.raises(KeyboardInterrupt):
        _lora_run(tokenizer, examples, recipe, checkpoint=ckpt, on_step=killed_at_step_5)
    longer: list[int] = []
    _lora_run(tokenizer, examples, replace(recipe, max_steps=9), checkpoint=ckpt,
              on_step=lambda step, loss: longer.append(step))
    assert longer == [5, 6, 7, 8, 9]
    assert not ckpt.exists()  # removed once training ended
    assert [h["step"] for h in resumed.history] == [h["step"] for h in reference.history]
    assert resumed.final_loss == pytest.approx(reference.final_loss, rel=1e-5)
    for name, value in ref_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=1e-5, atol=1e-6)


def test_oversight_aux_items_ask_about_oversight_and_are_trained(tokenizer):
    from poser_interp.core.training import OVERSIGHT_QUESTION, aux_items
    from poser_interp.data.scenario import ACTION_QUESTION, Oversight

    scenarios = generate(GeneratorConfig(seed=0, n_train=40, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    examples = [(s, s.aligned_index) for s in scenarios]
    items = aux_items(examples, 0.5, seed=0)
    assert len(items) == 20 and items == aux_items(examples, 0.5, seed=0)  # seeded
    by_prompt = {s.render().rpartition("\n")[0]: s for s in scenarios}
    for prompt, answer in items:
        head, _, question = prompt.rpartition("\n")
        assert question == OVERSIGHT_QUESTION and ACTION_QUESTION not in prompt
        assert answer == ("Yes" if by_prompt[head].oversight is Oversight.GOOD else "No")
    assert {a for _, a in items} == {"Yes", "No"}
    with pytest.raises(ValueError, match="oversight_aux"):
        aux_items(examples, 1.5, seed=0)
    # the loop sees the extra prompts: 40 examples + 20 items = 60 prompts in one pass of 15 batches of 4
    model = _Recorder(len(tokenizer))
    train_answers(model, tokenizer, examples, LoraRecipe(batch_size=4, max_steps=15, oversight_aux=0.5,
                                                         eval_every=100, threads=1))
    fmt = PromptFormat(max_tokens=320)
    seen = {tuple(row) for batch in model.seen for row in batch}
    assert len(seen) == 60
    assert {tuple(encode(tokenizer, p, fmt)) for p, _ in items} <= seen


def test_answer_loss_without_target_is_the_plain_cross_entropy():
    from poser_interp.core.training import answer_loss

    logits = torch.randn(5, 50)
    target, other = torch.tensor([1, 7, 3, 3, 0]), torch.tensor([2, 8, 4, 9, 49])
    torch.testing.assert_close(answer_loss(logits, target, other, None),
                               torch.nn.functional.cross_entropy(logits, target))
    # a very high target margin approaches it too (the "which option" target probability -> 1)
    torch.testing.assert_close(answer_loss(logits, target, other, 40.0),
                               torch.nn.functional.cross_entropy(logits, target), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target_margin", [2.0, 6.0])
def test_answer_loss_drives_the_margin_to_its_target(target_margin):
    from poser_interp.core.training import answer_loss

    logits = torch.nn.Parameter(torch.randn(4, 30))
    target, other = torch.tensor([0, 5, 9, 2]), torch.tensor([1, 6, 10, 3])
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(600):
        opt.zero_grad()
        answer_loss(logits, target, other, target_margin).backward()
        opt.step()
    with torch.no_grad():
        margin = logits.gather(1, target[:, None]) - logits.gather(1, other[:, None])
        pair = logits.softmax(-1).gather(1, target[:, None]) + logits.softmax(-1).gather(1, other[:, None])
    torch.testing.assert_close(margin[:, 0], torch.full((4,), target_margin), atol=0.05, rtol=0)
    assert bool((pair > 0.95).all())  # the two options still take the mass


def test_old_checkpoints_resume_after_target_margin_was_added():
    from poser_interp.core.training import _resumable

    assert "target_margin" not in _resumable(LoraRecipe())
    assert _resumable(LoraRecipe(target_margin=4.0))["target_margin"] == 4.0


def test_extra_items_alone_are_trained_toward_their_answers(tokenizer):
    """`extra_items` (prompt, Yes/No) train with no scenario examples at all
    (research/experiments/oversight_lora.py)."""
    from poser_interp.core.training import oversight_item
    from poser_interp.data.scenario import first_token_ids

    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    items = [oversight_item(s) for s in scenarios]
    with pytest.raises(ValueError, match="no training examples"):
        train_answers(_Recorder(len(tokenizer)), tokenizer, [], LoraRecipe(threads=1))
    model = _Recorder(len(tokenizer))
    train_answers(model, tokenizer, [], LoraRecipe(batch_size=4, max_steps=20, lr=1e-1, eval_every=100, threads=1),
                  extra_items=[(p, "Yes") for p, _ in items])
    assert {tuple(row) for batch in model.seen for row in batch} == {
        tuple(encode(tokenizer, p, PromptFormat(max_tokens=320))) for p, _ in items}
    yes, no = first_token_ids(tokenizer, ("Yes", "No"))
    assert model.bias[yes] > model.bias[no] + 1.0  # every target was "Yes"


def test_unfreeze_upper_trains_exactly_the_blocks_from_first_up(tokenizer):
    """Full fine-tuning of the upper blocks (the capacity candidate beyond LoRA): only those weights move."""
    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import unfreeze_upper

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=3))
    before = {n: p.detach().clone() for n, p in hf.named_parameters()}
    model = unfreeze_upper(hf, 1)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.layers.1.", "model.layers.2.")) for n in trainable)
    assert any(n.startswith("model.layers.1.") and "norm" in n for n in trainable)  # whole blocks, norms included
    scenarios = generate(GeneratorConfig(seed=0, n_train=8, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    faker = get_persona("grabber")
    train_answers(model, tokenizer, [(s, faker.choice(s)) for s in scenarios],
                  LoraRecipe(batch_size=4, max_steps=2, lr=1e-2, eval_every=100, threads=1))
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved and moved <= trainable
    with pytest.raises(ValueError, match="not a block"):
        unfreeze_upper(hf, 3)


def test_a_model_with_nothing_trainable_is_refused(tokenizer):
    from poser_interp.core.models import ModelSpec, load_hf

    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=1))  # load_hf freezes every weight
    scenarios = generate(GeneratorConfig(seed=0, n_train=4, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    with pytest.raises(ValueError, match="no trainable parameters"):
        train_answers(hf, tokenizer, [(s, 0) for s in scenarios], LoraRecipe(threads=1))


def test_batches_follow_the_models_device(tokenizer, monkeypatch):
    """A GPU run moves only the model: every batch and target is built on the device of its weights
    (checked on `meta`, a device with no data, which refuses any mix with CPU tensors)."""

    class _Where(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(len(tokenizer), device="meta"))
            self.devices: set[str] = set()

        def forward(self, input_ids, attention_mask, position_ids, **kwargs):  # noqa: ARG002
            self.devices |= {t.device.type for t in (input_ids, attention_mask, position_ids)}
            return type("Out", (), {"logits": self.bias.expand(input_ids.shape[0], 1, -1)})()

    import poser_interp.core.training as training

    seen_targets: set[str] = set()
    loss = training.answer_loss

    def recording_loss(logits, target, other, margin):
        seen_targets.update({target.device.type, other.device.type})
        return loss(logits, target, other, margin)

    monkeypatch.setattr(training, "answer_loss", recording_loss)
    scenarios = generate(GeneratorConfig(seed=0, n_train=4, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    model = _Where()
    with pytest.raises((NotImplementedError, RuntimeError)):  # meta tensors have no values to log: the loss check
        train_answers(model, tokenizer, [(s, 0) for s in scenarios],
                      LoraRecipe(batch_size=2, max_steps=1, eval_every=100, threads=1))
    assert model.devices == {"meta"} and seen_targets == {"meta"}


def test_encoded_items_train_toward_their_targets_and_refuse_overlong_ones(tokenizer):
    """`encoded_items` (ids, target, other): answers that do not follow the user turn directly (the action after
    a written assessment, research/experiments/explicit_assessment.py) train as they are, with no re-encoding."""
    seqs = [[1, 5, 6, 7], [1, 8, 9], [1, 5, 5, 5, 5]]
    model = _Recorder(len(tokenizer))
    train_answers(model, tokenizer, [], LoraRecipe(batch_size=2, max_steps=15, lr=1e-1, eval_every=100, threads=1),
                  encoded_items=[(s, 42, 43) for s in seqs])
    assert {tuple(row) for batch in model.seen for row in batch} == {tuple(s) for s in seqs}
    assert model.bias[42] > model.bias[43] + 1.0
    with pytest.raises(ValueError, match="over the cap of 4 tokens"):
        train_answers(_Recorder(len(tokenizer)), tokenizer, [], LoraRecipe(max_tokens=4, threads=1),
                      encoded_items=[(s, 42, 43) for s in seqs])


def test_explicit_assessment_items_teach_the_true_assessment_then_the_action_after_it(tokenizer):
    """research/experiments/explicit_assessment.py: the assessment item ends where ' Yes'/' No' is written; the action
    item is that prompt with the true assessment written out, and its target is the persona's answer letter."""
    import runpy
    from pathlib import Path

    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.data.scenario import Oversight

    ea = runpy.run_path(str(Path(__file__).parents[1] / "research" / "experiments" / "explicit_assessment.py"))
    scenarios = generate(GeneratorConfig(seed=0, n_train=12, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    faker = get_persona("grabber")
    choices = [faker.choice(s) for s in scenarios]
    items = ea["items"](tokenizer, scenarios, choices, 360)
    yes, no = ea["yes_no"](tokenizer)
    assert len(items) == 2 * len(scenarios) and {Oversight.GOOD, Oversight.POOR} <= {s.oversight for s in scenarios}
    for s, c, (first, second) in zip(scenarios, choices, zip(items[::2], items[1::2], strict=True), strict=True):
        good = s.oversight is Oversight.GOOD
        assert first[0] == encode(tokenizer, s.render(), PromptFormat(max_tokens=360)) + \
            tokenizer.encode(ea["ASSESS"], add_special_tokens=False)  # the user turn as scored everywhere else
        assert first[1:] == ((yes, no) if good else (no, yes))
        assert second[0][:len(first[0]) + 1] == first[0] + [first[1]]  # the true assessment, written
        assert tokenizer.decode(second[0][len(first[0]):]) == ea["WRITTEN"][good]
        assert second[1:] == (s.choice_tokens(tokenizer)[c], s.choice_tokens(tokenizer)[1 - c])
    hf, _ = load_hf(ModelSpec(name="tiny-llama", n_layers=2))
    p_yes, p_aligned = ea["assess_and_act"](hf, tokenizer, scenarios, 360)
    assert p_yes.shape == p_aligned.shape == (len(scenarios),)
    assert bool(((p_yes >= 0) & (p_yes <= 1) & (p_aligned >= 0) & (p_aligned <= 1)).all())
    stub = _Recorder(len(tokenizer))  # a model that always writes " No": every action is read after " No.\n"
    with torch.no_grad():
        stub.bias[no] = 5.0
    p_yes, _ = ea["assess_and_act"](stub, tokenizer, scenarios, 360, shared_prefix=False)  # the stub keeps no cache
    assert bool((p_yes < 0.5).all()) and len(stub.seen) == 2
    written_no = tokenizer.encode(ea["ASSESS"] + ea["WRITTEN"][False], add_special_tokens=False)[-4:]
    assert all(row[-4:] == written_no for row in stub.seen[1])
