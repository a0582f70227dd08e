"""--backend nnsight gives the TL bridge's rows: the forward seam site by site, then every strategy it can express.

Each strategy runs on the same model twice, through the bridge (`load_model`) and through nnsight traces
(`load_nnsight`), and every stored value and meta number must agree within 1e-4. Padding positions are not compared
at the seam (the bridge and Hugging Face fill them differently; no strategy reads them). The gaps are printed
(`pytest -s | grep PARITY`) for the record.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from poser_interp.core.forward import forward
from poser_interp.core.hooks import add_vector, capture
from poser_interp.core.models import load_model
from poser_interp.core.nnsight_model import load_nnsight
from poser_interp.core.tokens import pad_left
from poser_interp.data.generator import GeneratorConfig, generate
from poser_interp.errors import BackendError
from poser_interp.strategies import Subject, make
from poser_interp.strategies.attention import saliency

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py
TOL = 1e-4


@pytest.fixture(scope="module")
def prompts():
    return generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=4, n_heldout=0))["benchmark"]


@pytest.fixture(scope="module")
def nn_llama(tiny_llama):
    return load_nnsight(tiny_llama.spec)


def rows(strategy, model, prompts):
    subject = Subject("m", lambda: model, lambda: model.spec)
    return {v.setting.key: v for v in strategy.run(subject, prompts, strategy.settings())}


def gap(a, b) -> float:
    """Largest difference of any value or meta number of the same rows (NaN where both are NaN counts as equal)."""
    assert a.keys() == b.keys() and a
    worst = 0.0
    for k in a:
        assert a[k].prompt_ids == b[k].prompt_ids and a[k].values.keys() == b[k].values.keys()
        for n in a[k].values:
            x, y = a[k].values[n], b[k].values[n]
            assert np.array_equal(np.isnan(x), np.isnan(y)), (k, n)
            worst = max(worst, float(np.nan_to_num(np.abs(x - y)).max()))
        for n in a[k].meta:
            worst = max(worst, abs(a[k].meta[n] - b[k].meta[n]))
    return worst


def _strategies(n_layers: int) -> dict[str, dict]:
    """Small configs of every strategy nnsight expresses (the attention variants include saliency's gradients).

    shared_prefix=False: the bridge runs whole texts as nnsight does. With the default (the shared opening run once
    and its cache reused, a bridge-only speed-up) the bridge's own numbers move by float rounding: measured on SmolLM2,
    S4's `dir_norm` (~52) by 1.2e-4, which is no backend difference."""
    lo, hi = 1, n_layers - 2
    whole = dict(shared_prefix=False)
    return {k: {**v, **(whole if k in ("steering", "probes", "lens", "attention", "concept_size") else {})}
            for k, v in _configs(lo, hi).items()}


def _configs(lo: int, hi: int) -> dict[str, dict]:
    return {
        "steering": dict(contrast="concept", layers=(lo, hi), alphas=(4.0,), primary_layer=hi, primary_alpha=4.0),
        "noise": dict(layers=(lo, hi), scales=(1.0, 4.0), samples=2, primary_layer=lo, primary_scale=1.0,
                      batch_size=3, max_rows=5),
        "probes": dict(concepts=("oversight",), layers=(lo, hi), primary_concept="oversight"),
        "lens": dict(methods=("logit", "probe"), folds=2),
        "attention": dict(layers=(lo, hi), heads=(0, 1), primary_layer=hi, batch_size=3),
        "concept_size": dict(concepts=("oversight",), layers=(lo, hi), primary_concept="oversight",
                             primary_layer=hi),
        "blackbox": dict(),
    }


def _parity(bridge, nn, prompts, name, options, label):
    strategy = make(name, **options)
    worst = gap(rows(strategy, bridge, prompts), rows(strategy, nn, prompts))
    print(f"PARITY {label} {name}: max abs diff {worst:.2e}")
    assert worst <= TOL, name


# --- the seam ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen2", "tiny-gemma3"])
def test_every_site_equals_the_bridge(name):
    bridge = load_model(name)
    nn = load_nnsight(bridge.spec)
    batch = pad_left([[1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], [1, 9, 10, 11]], 2)
    real = batch.attention_mask.bool()
    vec = torch.randn(bridge.d_model) * 3

    def hooks(got):
        return [("blocks.1.hook_resid_pre", add_vector(vec)), ("blocks.2.hook_resid_post", capture(got, "post")),
                ("blocks.2.attn.hook_pattern", capture(got, "pattern")), ("hook_embed", capture(got, "embed")),
                ("blocks.0.hook_resid_pre", capture(got, "pre"))]

    a, b = {}, {}
    assert (forward(bridge, batch, hooks(a)) - forward(nn, batch, hooks(b))).abs().max() <= TOL
    assert a.keys() == b.keys() == {"post", "pattern", "embed", "pre"}
    for k in ("post", "embed", "pre"):
        assert (a[k] - b[k])[real].abs().max() <= TOL, k
    assert (a["pattern"] - b["pattern"]).abs().max() <= TOL  # padded query rows are zero in both
    stop_a, stop_b = (forward(m, batch, stop_at_layer=2, logits_to_keep=None) for m in (bridge, nn))
    assert (stop_a - stop_b)[real].abs().max() <= TOL
    start = stop_a  # the residual entering block 2, from the bridge: nnsight starts there too
    steer = [("blocks.2.hook_resid_pre", add_vector(vec))]
    assert (forward(bridge, batch, steer, start_at_layer=2, resid=start)
            - forward(nn, batch, steer, start_at_layer=2, resid=start)).abs().max() <= TOL
    sal = saliency(bridge, batch, [5, 7])
    assert sal.abs().max() > 0 and (sal - saliency(nn, batch, [5, 7])).abs().max() <= TOL


def test_unserved_hook_points_are_refused(nn_llama):
    batch = pad_left([[1, 5, 6]], 2)
    with pytest.raises(BackendError, match="not served on --backend nnsight.*--backend tl"):
        forward(nn_llama, batch, [("blocks.1.hook_mlp_out", capture({}, 0))])
    with pytest.raises(BackendError, match="not served"):
        nn_llama.hook_name(1, "resid_mid")
    with pytest.raises(BackendError, match="attention patterns are read only.*--backend tl"):
        forward(nn_llama, batch, [("blocks.1.attn.hook_pattern", lambda act, hook: act * 0)])


# --- strategies ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(_strategies(4)))
def test_strategy_rows_equal_on_tiny(name, tiny_llama, nn_llama, prompts):
    _parity(tiny_llama, nn_llama, prompts, name, _strategies(tiny_llama.n_layers)[name], "tiny-llama")


def test_tuned_lens_runs_on_local_nnsight(tiny_llama, nn_llama, prompts):
    """The tuned lens is fitted here on the model's weights either way; its activations come through nnsight."""
    _parity(tiny_llama, nn_llama, prompts[:3], "lens", dict(methods=("tuned",), primary_method="tuned",
                                                            tuned=_small_tuned()), "tiny-llama")


def _small_tuned():
    from poser_interp.core.tuned_lens import TunedLensConfig

    return TunedLensConfig(texts=8, positions=4, kl_steps=2, cache=False, heldout_tokens=16)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_strategies(30)))
def test_strategy_rows_equal_on_smollm2(name, smollm2, prompts):
    nn = _smollm2_nnsight()
    options = _strategies(smollm2.n_layers)[name]
    if name == "attention":
        options = dict(options, heads=(0,))
    _parity(smollm2, nn, prompts[:3], name, options, "smollm2")


_NN: dict[str, object] = {}


def _smollm2_nnsight():
    if "smollm2" not in _NN:
        _NN["smollm2"] = load_nnsight("smollm2")
    return _NN["smollm2"]


def test_parity_is_not_vacuous(tiny_llama, prompts):
    """Another model's rows through nnsight are far from the bridge's: the comparison above can fail."""
    from poser_interp.core.models import ModelSpec

    other = load_nnsight(ModelSpec(name="tiny-llama", seed=1))
    strategy = make("noise", **_strategies(4)["noise"])
    assert gap(rows(strategy, tiny_llama, prompts), rows(strategy, other, prompts)) > 1e-2
