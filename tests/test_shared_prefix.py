"""SharedPrefix: last-token reads that run the texts' shared opening once equal full forwards."""

from __future__ import annotations

import pytest
import torch

from poser_interp.core.activations import collect, last_resid
from poser_interp.core.forward import forward
from poser_interp.core.models import ModelSpec, load_model
from poser_interp.core.shared_prefix import SharedPrefix, shared_length
from poser_interp.core.tokens import PromptFormat, encode, pad_id, pad_left
from poser_interp.data.generator import GeneratorConfig, generate

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py


@pytest.fixture(scope="module")
def texts():
    """Scenario prompts (they share the chat header and the scenario's opening) and short statements (the header
    only), of mixed lengths so batches carry padding between the prefix and each text."""
    scenarios = generate(GeneratorConfig(seed=0, n_train=6, n_test=0, n_benchmark=0, n_heldout=0))["train"]
    return [s.render() for s in scenarios] + ["Nobody reviews the logs.", "Every change is checked twice by a human."]


def test_shared_length_leaves_a_token_of_each():
    assert shared_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical texts keep their last token to read
    assert shared_length([[1, 2], [3, 4]]) == 0 and shared_length([]) == 0


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_reads_on_a_shared_prefix_equal_full_forwards(arch, texts):
    model = load_model(ModelSpec(name=arch, n_layers=4, seed=1))
    layers = list(range(model.n_layers))
    ids = [encode(model.tokenizer, t, PromptFormat()) for t in texts]
    prefix = SharedPrefix.of(model, ids)
    if arch == "tiny-gemma3":  # its 8-token sliding window is shorter than the texts: full forwards instead
        assert prefix is None and model.hf_model.config.sliding_window < max(map(len, ids))
    else:
        assert prefix is not None and len(prefix) >= 20  # the chat header at least
    full = last_resid(model, texts, layers, batch_size=3, shared_prefix=False)
    fast = last_resid(model, texts, layers, batch_size=3)
    torch.testing.assert_close(fast, full, rtol=1e-4, atol=1e-4)
    acts, logits = collect(model, ids, layers, "last", 3, [(1, 2)] * len(ids), shared_prefix=False)
    acts2, logits2 = collect(model, ids, layers, "last", 3, [(1, 2)] * len(ids))
    torch.testing.assert_close(acts2, acts, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits2, logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(full[-1, 0], full[-1, 1])  # the texts differ, so the comparison could fail


def test_the_cache_is_really_read(tiny_llama, texts):
    """Without its cache the stripped texts would attend to themselves alone: the read must differ from that (the
    bridge silently ignored the cache before `cache_keyword`)."""
    ids = [encode(tiny_llama.tokenizer, t, PromptFormat()) for t in texts[:3]]
    prefix = SharedPrefix.of(tiny_llama, ids)
    assert prefix is not None
    batch = pad_left(prefix.strip(ids), pad_id(tiny_llama.tokenizer))
    alone = forward(tiny_llama, batch)[:, -1]
    cached = forward(tiny_llama, batch, prefix=prefix)[:, -1]
    full = forward(tiny_llama, pad_left(ids, pad_id(tiny_llama.tokenizer)))[:, -1]
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(alone, full, atol=1e-3)
    assert prefix.cache.get_seq_length() == len(prefix)  # each call extended a copy, never the prefix's cache


def test_short_openings_and_bad_texts_are_refused(tiny_llama):
    assert SharedPrefix.of(tiny_llama, [[1, 2, 3, 4], [1, 2, 5, 6]]) is None  # under MIN_SHARED tokens
    ids = [encode(tiny_llama.tokenizer, t, PromptFormat()) for t in ("one text", "another text")]
    prefix = SharedPrefix.of(tiny_llama, ids)
    assert prefix is not None
    with pytest.raises(ValueError, match="start with the shared prefix"):
        prefix.strip([[7] * 40])
    with pytest.raises(ValueError, match="start_at_layer"):
        forward(tiny_llama, pad_left(prefix.strip(ids), 0), start_at_layer=1, resid=torch.zeros(2, 3, 8),
                prefix=prefix)


@pytest.mark.slow
def test_the_real_model_reads_the_same_on_its_prefix(smollm2, texts):
    layers = [0, 10, 29]
    full = last_resid(smollm2, texts, layers, batch_size=4, shared_prefix=False)
    fast = last_resid(smollm2, texts, layers, batch_size=4)
    assert ((fast - full).norm() / full.norm()).item() < 1e-5


def test_gemma3_reads_on_a_prefix_inside_its_window():
    """Gemma 3 (sliding and full attention) takes the prefix path when every text fits its window: short token
    lists here, as the real model's 512-token window holds every prompt of a testbed."""
    model = load_model(ModelSpec(name="tiny-gemma3", n_layers=4, seed=1))
    ids = [[2, 40, 41, 42, 43, 50, 51], [2, 40, 41, 42, 43, 60], [2, 40, 41, 42, 43, 70, 71, 72]]
    assert max(map(len, ids)) <= model.hf_model.config.sliding_window
    prefix = SharedPrefix.of(model, ids, minimum=2)
    assert prefix is not None and len(prefix) == 5
    full = forward(model, pad_left(ids, 0))[:, -1]
    cached = forward(model, pad_left(prefix.strip(ids), 0), prefix=prefix)[:, -1]
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(full[0], full[1])


@pytest.mark.parametrize("arch", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_hf_scoring_on_a_shared_prefix_equals_full_forwards_with_and_without_an_adapter(arch, texts):
    """`hf_score_prepared` (testbed builds, verify, the oversight stage): plain HF and peft models read the texts'
    shared opening once; the two answer logits equal full forwards."""
    from poser_interp.core.models import load_hf
    from poser_interp.core.scoring import hf_score_prepared, prepare
    from poser_interp.core.training import LoraRecipe, make_lora_model

    hf, tok = load_hf(ModelSpec(name=arch, n_layers=4, seed=1))
    prep = prepare(tok, texts, ("A", "B"))
    # tiny gemma's 8-token sliding window is shorter than the texts: full forwards instead
    assert (SharedPrefix.of_hf(hf, prep.ids) is None) == (arch == "tiny-gemma3")
    plain = hf_score_prepared(hf, prep, pad_id(tok), batch_size=3, shared_prefix=False)
    torch.testing.assert_close(hf_score_prepared(hf, prep, pad_id(tok), batch_size=3), plain, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(plain[0], plain[-1])  # the prompts differ, so the comparison could fail
    lora = make_lora_model(hf, LoraRecipe(rank=2, seed=3))
    with torch.no_grad():  # an adapter that changes the answers (LoRA's B starts at zero)
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    full = hf_score_prepared(lora, prep, pad_id(tok), batch_size=3, shared_prefix=False)
    torch.testing.assert_close(hf_score_prepared(lora, prep, pad_id(tok), batch_size=3), full, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(full, plain, atol=1e-3)
