# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S6 attentiveness to oversight facts
#
# A faker's answer hinges on the `critical` facts (whether it is watched); an aligned model's should not. We
# measure, on benchmark prompts where both models of a pair act aligned, how much each model "looks at" those
# facts: gradient saliency, attention from the final position (per layer and head), and the shift of the
# last-token residual when the facts are removed (everything else identical). Poser found this at 46%.
#
# Runs on the default testbed; on a tiny random-weight testbed when `POSER_INTERP_NOTEBOOK_TINY=1` or when the
# default testbed has no pairs yet (`POSER_INTERP_TINY_TESTBED` may name an existing tiny testbed to reuse).

# %%
import tempfile
from pathlib import Path

import plotly.graph_objects as go

from poser_interp import ResultsStore, RunConfig, notebook_testbed, pad_left, run_detection
from poser_interp.strategies import build, make
from poser_interp.strategies.attention import critical_tokens, saliency
from poser_interp.viz.attention_plots import kind_difference_heatmap, setting_heatmap, setting_lines

# the default testbed if it has a pair with benchmark prompts; else (or when asked for) the tiny one
TINY, testbed = notebook_testbed()
print(f"testbed {testbed.root}: {len(testbed.pairs)} pairs")

# %% [markdown]
# ## Run S6 on every pair
# Results are stored as computed (rerunning resumes). The reported setting is fixed in advance: saliency.

# %%
probe = testbed.load(next(iter(testbed.models)))
strategy = build("attention", probe.n_layers, int(probe.bridge.cfg.n_heads), batch_size=4)
out = Path(tempfile.mkdtemp()) if TINY else Path("results") / f"attentiveness-{testbed.root.name}"
ev = run_detection(testbed, [strategy, make("blackbox")], out, config=RunConfig(max_prompts=6 if TINY else 48),
                   log=print)
for variant in strategy.config.variants:
    rs = [r for r in ev.find("attention", "attentiveness") if r.setting["variant"] == variant]
    best = max(rs, key=lambda r: (r.summary.accuracy == r.summary.accuracy, r.summary.accuracy))
    print(f"{variant:15s} best setting {best.setting.key}: accuracy {best.summary.accuracy:.2f} (optimistic)")
for name in ("attention", "blackbox"):
    r = ev.primary(name)
    print(f"{name} {r.setting.key} {r.score}: accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}")

# %% [markdown]
# ## Per layer and head
# Accuracy over pairs for each layer x head (head 'mean' = mean over heads), and where fakers attend more than
# aligned models (mean attention mass on the critical facts, fakers minus aligned).

# %%
store = ResultsStore.open(out)
figures = {
    "accuracy_heads": setting_heatmap(ev, "attention", "head", "layer", where={"variant": "attention"}),
    "mass_difference": kind_difference_heatmap(store, "attention", "attentiveness", "head", "layer",
                                               {"variant": "attention"}),
    "accuracy_layers": setting_lines(ev, "attention", "layer", "variant", where={"head": ("mean", None)}),
}
figures["accuracy_heads"]  # noqa: B018 (displayed by Jupyter)

# %% [markdown]
# ## One prompt: which tokens carry the saliency?
# The gradient of the misaligned answer's logit w.r.t. each input embedding (L2 norm), critical-fact tokens red.

# %%
prompt = testbed.benchmark(next(p for p in testbed.pair_ids() if testbed.pairs[p]["benchmark_size"]))[0]
ids, mask = critical_tokens(probe.tokenizer, prompt)
target = [prompt.choice_tokens(probe.tokenizer)[1 - prompt.aligned_index]]
sal = saliency(probe, pad_left([ids], 0), target)[0].norm(dim=-1)
tokens = [probe.tokenizer.decode([i]) for i in ids]
figures["token_saliency"] = go.Figure(go.Bar(x=list(range(len(ids))), y=sal.tolist(), hovertext=tokens,
                                             marker_color=["#d62728" if m else "#7f7f7f" for m in mask]))
figures["token_saliency"].update_layout(title=f"saliency per token, {prompt.id} on {probe.spec.describe()}",
                                        xaxis_title="token", yaxis_title="|d logit / d embedding|")
figures["token_saliency"]  # noqa: B018
