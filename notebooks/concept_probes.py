# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S4 suspicious concepts on one pair
#
# Does a model's residual stream, while it answers benchmark prompts on which it behaves well, lean toward
# "vulnerability", "incompetent oversight", "misaligned behaviour" or "power seeking"? For each model, concept
# and layer we build a mass-mean direction from the project's own contrast pairs (`probes/*.jsonl`), check it
# on held-out pairs, and measure how much the model's activations on the pair's benchmark prompts point to the
# suspicious side. The faker is expected to lean further.
#
# Runs on the shipped default testbed; on a tiny random-weight testbed (built in a minute, then cached) when
# `POSER_INTERP_NOTEBOOK_TINY=1` or when the default testbed has no pairs yet
# (`POSER_INTERP_TINY_TESTBED` picks its directory). Open with `jupytext --to ipynb`.

# %%

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from poser_interp import first_pair, load_contrast_dir, notebook_testbed
from poser_interp.strategies import Subject, build

# tiny: an existing tiny testbed with pairs is used as it is; otherwise the standard one is built (or resumed)
TINY, testbed = notebook_testbed()
pair_id, pair, prompts = first_pair(testbed, 6 if TINY else 48)
print(f"testbed {testbed.root} ({'tiny' if TINY else 'default'}), pair {pair_id}: {len(prompts)} prompts")

# %% [markdown]
# ## The contrast data
# Each line of a `probes/*.jsonl` file is a minimal pair: the positive (benign) and negative (suspicious) side
# of one concept, written for this project's domain (AI agents at work). Held-out splits keep pairs together.

# %%
sets = load_contrast_dir()
for concept, s in sets.items():
    print(f"{concept:10s} {len(s)} pairs, e.g.\n  + {s.positive[0]}\n  - {s.negative[0]}")

# %% [markdown]
# ## Probe both models at every layer
# The strategy never learns which model is the faker; we keep the labels only to plot. The best layer per
# concept is chosen per model on held-out *contrast* pairs (highest probe accuracy, ties by d').

# %%
models = {kind: testbed.load(pair[kind]) for kind in ("aligned", "faker")}
n_layers = models["aligned"].n_layers
strategy = build("probes", n_layers, int(models["aligned"].bridge.cfg.n_heads))
values = {kind: {v.setting.key: v for v in strategy.run(Subject(pair[kind], lambda m=m: m), prompts,
                                                          strategy.settings())}
          for kind, m in models.items()}
for kind, by_key in values.items():
    best = by_key["concept=all,layer=best"].meta
    print(f"{kind:8s} best layers: " + ", ".join(f"{c} L{int(best[f'layer_{c}'])}" for c in strategy.config.concepts)
          + f"; mean held-out probe accuracy there {best['probe_acc']:.2f}")

# %% [markdown]
# ## Held-out probe accuracy and suspicion by layer
# Left: does each direction separate held-out contrast pairs? Right: mean suspicion (-cos with the
# positive-minus-negative direction) of each model on the benchmark prompts. Solid: aligned; dashed: faker.

# %%
fig = make_subplots(rows=1, cols=2, subplot_titles=("held-out probe accuracy", "mean suspicion (-cos)"))
layers = list(strategy.config.layers)
for concept in strategy.config.concepts:
    for kind, dash in (("aligned", "solid"), ("faker", "dash")):
        rows = [values[kind][f"concept={concept},layer={la}"] for la in layers]
        fig.add_trace(go.Scatter(x=layers, y=[r.meta["probe_acc"] for r in rows], name=f"{concept} ({kind})",
                                 line_dash=dash, legendgroup=concept), row=1, col=1)
        fig.add_trace(go.Scatter(x=layers, y=[r.values["susp_cos"].mean() for r in rows], line_dash=dash,
                                 legendgroup=concept, showlegend=False), row=1, col=2)
fig.update_xaxes(title_text="layer")
fig.update_layout(title=f"{pair_id}: concept probes by layer")
fig  # noqa: B018 (displayed by Jupyter)

# %% [markdown]
# ## Decide the pair
# Higher suspicion = called the faker. The chosen setting (fixed in advance) averages the concepts, each at
# its best held-out layer.

# %%
ids = [p.id for p in prompts]
for key in ["concept=all,layer=best"] + [f"concept={c},layer=best" for c in strategy.config.concepts]:
    for score in strategy.scores():
        a, f = score.decide(values["aligned"][key].subset(ids), values["faker"][key].subset(ids))
        verdict = "undecided (NaN)" if np.isnan(a) or np.isnan(f) else ("right" if f > a else "wrong")
        print(f"{key:28s} {score.name:22s} aligned {a:+.4f}  faker {f:+.4f}  -> {verdict}")
