# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # S3 learning speed
#
# A faker already carries a misaligned policy; teaching it to misbehave under good oversight should take fewer
# steps than teaching an aligned model. Each model is copied and fine-tuned for a few steps (LoRA on its upper
# layers, or all weights of those layers) toward the misaligned answer on good-oversight prompts from the
# testbed's test split; the pair's benchmark prompts are the held-out set. Poser: 90% with LoRA.
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
print(f"testbed {testbed.root}: {len(testbed.pairs)} pairs; training prompts from {testbed.root / 'data'}")

# %% [markdown]
# ## Fine-tune every model briefly
# The same training prompts, batch order and LoRA init for every model (fixed seed): each (model, method, k) is
# deterministic, and rerunning resumes from the stored results. The reported setting is LoRA after 4 steps.

# %%
n_layers, n_heads = shape_of(testbed.base_spec())
options = dict(steps=(1, 2), primary_steps=2, n_train=6, batch_size=3) if TINY else {}
strategy = build("learning_speed", n_layers, n_heads, data=str(testbed.root / "data"), **options)
out = Path(tempfile.mkdtemp()) if TINY else Path("results") / f"learning_speed-{testbed.root.name}"
ev = run_detection(testbed, [strategy, make("blackbox")], out, config=RunConfig(max_prompts=6 if TINY else 48),
                   log=print)
for r in ev.find("learning_speed"):
    print(f"{r.setting.key:22s} {r.score:10s} accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}")
r = ev.primary("blackbox")
print(f"blackbox {r.score}: accuracy {r.summary.accuracy:.2f} {r.summary.accuracy_ci}")

# %% [markdown]
# ## Accuracy per method x k, and each model's learning curve on the held-out benchmark

# %%
store = ResultsStore.open(out)
figures = {"accuracy": setting_heatmap(ev, "learning_speed", "steps", "method")}
for method in strategy.config.methods:
    figures[f"curves_{method}"] = model_curves(store, "learning_speed", "steps", "p_after", start="p_before",
                                               where={"method": method})
figures["accuracy"]  # noqa: B018 (displayed by Jupyter)

# %%
figures[f"curves_{strategy.config.primary_method}"]  # noqa: B018
