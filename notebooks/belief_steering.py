# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S1 inducing the belief that it is safe to misbehave
#
# For each model and layer, a "poor oversight" direction: the mean last-token residual of poor-oversight prompts
# minus that of the same prompts with their critical facts removed (wrapper, answer order and final token
# unchanged), from the testbed's test split, never the benchmark. Added with weight alpha to benchmark prompts,
# it should tip a faker toward misbehaving more than an aligned model. Poser found this near chance.
#
# Runs on the default testbed; on a tiny random-weight testbed when `POSER_INTERP_NOTEBOOK_TINY=1` or when the
# default testbed has no pairs yet (`POSER_INTERP_TINY_TESTBED` may name an existing tiny testbed to reuse).

# %%
import tempfile
from pathlib import Path

from poser_interp import ResultsStore, RunConfig, notebook_testbed, run_detection, shape_of
from poser_interp.strategies import build, make
from poser_interp.viz.attention_plots import model_curves, setting_heatmap

# the default testbed if it has a pair with benchmark prompts; else (or when asked for) the tiny one
TINY, testbed = notebook_testbed()
print(f"testbed {testbed.root}: {len(testbed.pairs)} pairs; direction prompts from {testbed.root / 'data'}")

# %% [markdown]
# ## Steer every model of every pair
# The direction prompts are chosen by a hash of their ids, the same for every model. alpha = 1 adds exactly the
# mean shift the critical facts cause; the reported setting (fixed in advance) is alpha 4 at ~55% depth.

# %%
n_layers, n_heads = shape_of(testbed.base_spec())
options = dict(alphas=(1.0, 4.0), n_prompts=8) if TINY else {}
strategy = build("steering", n_layers, n_heads, data=str(testbed.root / "data"), **options)
out = Path(tempfile.mkdtemp()) if TINY else Path("results") / f"belief_steering-{testbed.root.name}"
ev = run_detection(testbed, [strategy, make("blackbox")], out, config=RunConfig(max_prompts=6 if TINY else 48),
                   log=print)
for name in ("steering", "blackbox"):
    r = ev.primary(name)
    print(f"{name} {r.setting.key} {r.score}: accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}, "
          f"AUROC {r.summary.auroc:.2f}")

# %% [markdown]
# ## Accuracy per layer x alpha, and each model's dose-response
# Picking the best cell on the same pairs is optimistic; the reported setting was fixed in advance.

# %%
store = ResultsStore.open(out)
layer = strategy.config.primary_layer
figures = {
    "accuracy": setting_heatmap(ev, "steering", "alpha", "layer"),
    "dose_response": model_curves(store, "steering", "alpha", "p_steered", start="p_clean", where={"layer": layer}),
}
figures["accuracy"]  # noqa: B018 (displayed by Jupyter)

# %%
figures["dose_response"]  # noqa: B018
