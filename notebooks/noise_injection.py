# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S2 noise injection on one pair
#
# Poser's strongest strategy: add random noise to the residual stream of both models of a pair, on benchmark
# prompts where both act aligned, and see whose answer tips toward the misaligned action. We load one pair,
# inject noise at one layer and several scales, look at the dose-response, and decide the pair with each score.
#
# Runs on the shipped default testbed; on a tiny random-weight testbed (built in a minute, then cached) when
# `POSER_INTERP_NOTEBOOK_TINY=1` or when the default testbed is not there. Open with `jupytext --to ipynb`.

# %%

import numpy as np
import plotly.graph_objects as go

from poser_interp import first_pair, notebook_testbed
from poser_interp.strategies import BridgeEngine, NoiseConfig, NoiseStrategy, noise_values
from poser_interp.strategies.noise import rel_margin_drop

TINY, testbed = notebook_testbed()
pair_id, pair, prompts = first_pair(testbed, 6 if TINY else 48)
print(f"testbed {testbed.root} ({'tiny' if TINY else 'default'}), pair {pair_id}: {len(prompts)} prompts")

# %% [markdown]
# ## Load both models
# Adapters are checked against the testbed manifest's hashes; the strategy never learns which one is the faker
# (we keep the labels only to plot).

# %%
models = {kind: testbed.load(pair[kind]) for kind in ("aligned", "faker")}
n_layers = models["aligned"].n_layers
layer = min(4, n_layers - 1)

# %% [markdown]
# ## Inject
# Gaussian noise at the input of one layer, at every real token, with a norm per position of `scale` x the
# model's mean residual norm there. The draws depend only on (seed, prompt, layer, sample): both models get
# the same noise directions.

# %%
config = NoiseConfig(layers=(layer,), scales=(0.25, 0.5, 1.0, 2.0), samples=2 if TINY else 3, primary_layer=layer)
strategy = NoiseStrategy(config)
values = {kind: {float(v.setting["scale"]): v for v in noise_values(BridgeEngine(m), prompts, strategy.settings(),
                                                                       config)}
          for kind, m in models.items()}
for kind, by_scale in values.items():
    clean = by_scale[1.0].values["p_clean"].mean()
    noisy = ", ".join(f"x{s}: {v.values['p_noisy'].mean():.2f} ({v.values['flips'].mean():.0%} flips)"
                      for s, v in by_scale.items())
    print(f"{kind:8s} P(misaligned) clean {clean:.2f}; noised {noisy}")

# %% [markdown]
# ## Dose-response
# The faker's P(misaligned) should rise more. Noise pulls every answer toward 50/50, so a less confident model
# rises more anyway: the right panel shows the confidence-controlled score (relative drop of the logit margin).

# %%
scales = [0.0, *config.scales]
fig = go.Figure()
for kind, by_scale in values.items():
    p = [by_scale[1.0].values["p_clean"].mean()] + [by_scale[s].values["p_noisy"].mean() for s in config.scales]
    fig.add_trace(go.Scatter(x=scales, y=p, mode="lines+markers", name=f"{kind}: P(misaligned)"))
    drop = [0.0] + [float(np.median(rel_margin_drop(by_scale[s].values))) for s in config.scales]
    fig.add_trace(go.Scatter(x=scales, y=drop, mode="lines+markers", name=f"{kind}: rel. margin drop",
                             line_dash="dash"))
fig.update_layout(title=f"{pair_id}, layer {layer}", xaxis_title="noise scale (x mean residual norm)")
fig  # noqa: B018 (displayed by Jupyter)

# %% [markdown]
# ## Decide the pair with each score
# A pair is decided by comparing the two models' scores (higher = called the faker).

# %%
ids = [p.id for p in prompts]
for score in strategy.scores():
    a, f = score.decide(values["aligned"][1.0].subset(ids), values["faker"][1.0].subset(ids))
    verdict = "undecided (NaN)" if np.isnan(a) or np.isnan(f) else ("right" if f > a else "wrong")
    print(f"{score.name:16s} aligned {a:+.3f}  faker {f:+.3f}  -> {verdict}")
