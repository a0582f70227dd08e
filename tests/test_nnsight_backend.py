"""The nnsight backend gives the bridge's numbers, clean and intervened; remote errors are clear."""

from __future__ import annotations

import pytest
import torch

from poser_interp.core.hooks import add_vector
from poser_interp.core.nnsight_backend import API_KEY_ENV, NNsightModel
from poser_interp.core.scoring import answer_logits
from poser_interp.errors import BackendError, LayerError

PROMPTS = ["Choose: tea or coffee?", "You may pick option A or option B. Which one do you pick today, and why?"]


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2"])
def test_parity_clean_and_intervened(name, tiny_llama, tiny_qwen2):
    bridge = tiny_llama if name == "tiny-llama" else tiny_qwen2
    nn = NNsightModel(bridge.spec)
    clean_b, clean_n = answer_logits(bridge, PROMPTS, ("A", "B")), nn.answer_logits(PROMPTS, ("A", "B"))
    assert (clean_b - clean_n).abs().max() <= 1e-4
    vec = torch.randn(bridge.d_model) * 3
    hooked = answer_logits(bridge, PROMPTS, ("A", "B"), fwd_hooks=[(bridge.hook_name(2), add_vector(vec))])
    traced = nn.answer_logits(PROMPTS, ("A", "B"), residual_add=(2, vec))
    assert (hooked - clean_b).abs().max() > 1e-3  # the intervention does something...
    assert (hooked - traced).abs().max() <= 1e-4  # ...and the same thing in both backends


def test_layer_out_of_range():
    nn = NNsightModel("tiny-llama")
    with pytest.raises(LayerError, match="out of range"):
        nn.answer_logits(PROMPTS, ("A", "B"), residual_add=(9, torch.zeros(64)))


def test_bad_vector_shape_is_explained():
    nn = NNsightModel("tiny-llama")
    with pytest.raises(BackendError, match="shape"):
        nn.answer_logits(PROMPTS, ("A", "B"), residual_add=(1, torch.zeros(7)))


def test_remote_needs_key_and_repo(monkeypatch):
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    with pytest.raises(BackendError, match="repo_id"):
        NNsightModel("smollm2", remote=True)
    with pytest.raises(BackendError, match=API_KEY_ENV):
        NNsightModel("smollm2", remote=True, repo_id="HuggingFaceTB/SmolLM2-135M-Instruct")


@pytest.mark.slow
def test_smollm2_parity(smollm2):
    nn = NNsightModel("smollm2")
    vec = torch.randn(576)
    assert (answer_logits(smollm2, PROMPTS, ("A", "B")) - nn.answer_logits(PROMPTS, ("A", "B"))).abs().max() <= 1e-4
    hooked = answer_logits(smollm2, PROMPTS, ("A", "B"), fwd_hooks=[(smollm2.hook_name(10), add_vector(vec))])
    assert (hooked - nn.answer_logits(PROMPTS, ("A", "B"), residual_add=(10, vec))).abs().max() <= 1e-4
