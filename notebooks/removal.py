# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Removal: can the faking be trained out?
#
# Poser's second question. Each model is fine-tuned on good-oversight prompts with its own answers as targets
# (`sft`), or the same with Gaussian noise in the residual stream during training (`noise`); then we measure,
# on unseen poor-oversight scenarios, how often it still takes the misaligned action. Removal rate =
# 1 - after / before; aligned models get the same treatment as a control.
#
# On the default testbed this treats one faker and one aligned model (100 steps each, ~10-20 min of one core
# apiece), into the same folder that `poser-interp remove` fills (a later full run resumes it). On a tiny
# random-weight testbed (`POSER_INTERP_NOTEBOOK_TINY=1`, or no default testbed) it takes seconds, and its
# models do not fake: the numbers only show the plumbing.

# %%
from poser_interp import notebook_testbed
from poser_interp.removal import RemovalConfig, RemovalSummary, remove

TINY, testbed = notebook_testbed()
kinds = {m: e["kind"] for m, e in testbed.models.items()}
chosen = [min(m for m, k in kinds.items() if k == "faker"), min(m for m, k in kinds.items() if k == "aligned")]
config = RemovalConfig(method="sft", steps=3, n_train=8, batch_size=4, n_eval=6) if TINY else RemovalConfig()
print(f"testbed {testbed.root}; treating {chosen} with {config}")

# %% [markdown]
# ## Treat
# The treated adapters go beside the testbed (`<testbed>-removal-sft`), hash-checked like every testbed model;
# the testbed itself is never written.

# %%
treated = remove(testbed, config, models=None if TINY else chosen)
summary = RemovalSummary.load(treated.root)
for r in summary.rows:
    print(f"{r['model']:12s} {r['kind']:8s} {r['set']:17s} misaligned {r['misaligned_before']:.2f} -> "
          f"{r['misaligned_after']:.2f}; good->aligned {r['good_aligned_before']:.2f} -> {r['good_aligned_after']:.2f}")

# %% [markdown]
# ## Before and after
# Grey: misaligned rate under poor oversight before treatment; red: after. Fakers should fall; aligned models
# must stay near zero.

# %%
fig = summary.figure()
fig  # noqa: B018 (displayed by Jupyter)

# %% [markdown]
# ## Over models
# Mean removal rate over fakers with a 95% bootstrap interval, per evaluation set (trained oversight wordings,
# held-out wordings, held-out topics), and the control.

# %%
for name, (m, lo, hi, n) in summary.removal.items():
    ctl = summary.control[name]
    print(f"{name}: removal {m:.2f} ({lo:.2f}-{hi:.2f}) over {n} fakers; aligned models misaligned after: "
          f"{ctl[0]:.2f} over {ctl[3]}")
