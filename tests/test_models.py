"""Model loading: bridge numerics vs raw HF, tiny models, adapters, bad input."""

from __future__ import annotations

import json

import pytest
import torch

from poser_interp.core.models import ModelSpec, load_hf, load_model
from poser_interp.errors import AdapterMismatchError, LayerError, ModelLoadError

IDS = torch.tensor([[1, 520, 9531, 198, 4093, 3365, 11173, 28, 2683]])


def test_tiny_bridge_matches_hf_logits(tiny_model):
    hf, _ = load_hf(tiny_model.spec)
    with torch.no_grad():
        ours, ref = tiny_model.bridge(IDS), hf(IDS).logits
    assert (ours - ref).abs().max() <= 1e-4


def test_tiny_models_are_seeded():
    a, _ = load_hf(ModelSpec(name="tiny-llama", seed=1))
    b, _ = load_hf(ModelSpec(name="tiny-llama", seed=1))
    c, _ = load_hf(ModelSpec(name="tiny-llama", seed=2))
    wa, wb, wc = (m.model.layers[0].mlp.up_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_tl_hook_names_fire(tiny_llama):
    seen: dict[str, tuple[int, ...]] = {}

    def grab(name):
        def hook(x, hook):
            seen[name] = tuple(x.shape)
        return hook

    names = [tiny_llama.hook_name(1), "blocks.1.attn.hook_pattern"]
    with torch.no_grad():
        tiny_llama.bridge.run_with_hooks(IDS, fwd_hooks=[(n, grab(n)) for n in names])
    assert seen["blocks.1.hook_resid_pre"] == (1, IDS.shape[1], tiny_llama.d_model)
    assert seen["blocks.1.attn.hook_pattern"] == (1, 4, IDS.shape[1], IDS.shape[1])
    _, cache = tiny_llama.bridge.run_with_cache(IDS)
    assert "blocks.0.hook_resid_post" in cache


def test_layer_out_of_range(tiny_llama):
    with pytest.raises(LayerError, match=r"layers 0\.\.3"):
        tiny_llama.hook_name(4)
    with pytest.raises(LayerError, match="unknown hook kind"):
        tiny_llama.hook_name(0, "resid_sideways")  # type: ignore[arg-type]


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match="unknown model 'gpt-17'"):
        load_model("gpt-17")


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(str(tmp_path))


def _save_adapter(model, path, r=2):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(path)


def test_adapter_is_merged(tmp_path):
    base, _ = load_hf(ModelSpec(name="tiny-llama", seed=0))
    _save_adapter(base, tmp_path / "ad")
    plain = load_model(ModelSpec(name="tiny-llama", seed=0))
    merged = load_model(ModelSpec(name="tiny-llama", seed=0, adapter=str(tmp_path / "ad")))
    with torch.no_grad():
        assert (merged.bridge(IDS) - plain.bridge(IDS)).abs().max() > 1e-3


def test_adapter_mismatch(tmp_path):
    wide, _ = load_hf(ModelSpec(name="tiny-llama", seed=0, d_model=128))
    _save_adapter(wide, tmp_path / "wide")
    with pytest.raises(AdapterMismatchError, match="does not fit base model"):
        load_model(ModelSpec(name="tiny-llama", seed=0, adapter=str(tmp_path / "wide")))


def test_adapter_not_a_directory(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        load_model(ModelSpec(name="tiny-llama", adapter=str(tmp_path / "x")))


def test_local_hf_directory_roundtrip(tmp_path, tiny_llama, tokenizer):
    hf, _ = load_hf(tiny_llama.spec)
    hf.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_hidden_layers"] == 4
    local = load_model(str(tmp_path / "m"))
    with torch.no_grad():
        assert (local.bridge(IDS) - tiny_llama.bridge(IDS)).abs().max() <= 1e-5


@pytest.mark.slow
def test_smollm2_bridge_matches_hf(smollm2):
    assert (smollm2.n_layers, smollm2.d_model) == (30, 576)
    hf, _ = load_hf("smollm2")
    with torch.no_grad():
        assert (smollm2.bridge(IDS) - hf(IDS).logits).abs().max() <= 1e-4
