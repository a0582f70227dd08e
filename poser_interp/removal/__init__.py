"""Removal: can the faking be trained out? (Poser's second question.)

Poser fine-tuned each faker for 100 steps on good-oversight prompts with the model's own (aligned) answers as
targets; that alone made its poor-oversight choices aligned 76% more often, and the same training with noise
injected into the activations 86% more often. `remove` does the same on a testbed:

- training prompts: good-oversight scenarios of the model's persona from the testbed's training pool (never a
  benchmark or test scenario: checked by text), those outside the model's own training split first; targets:
  the model's own answers before treatment (its likelier option on each prompt);
- `sft`: the model's own LoRA adapter trains on (continued, same rank and modules), so the treated model is
  again base + one adapter of the testbed's form and every tool loads it unchanged; `noise`: the same, with
  Gaussian noise added to the residual stream entering the chosen layers at every training forward pass
  (`noise_hooks`; norm per position = scale x the model's mean residual norm there, as in S2). No noise
  while measuring.
- measured before and after on the model's unseen test scenarios (poor oversight: misaligned rate; good
  oversight: aligned rate) with the trained oversight wordings and with the held-out ones (`wordings.HELDOUT`),
  and on held-out topics. Removal rate = 1 - after / before (of the poor-oversight misaligned rate); aligned
  models get the same treatment as a control (it must not make them misaligned).

The treated models form a testbed of their own beside the source (`<testbed>-removal-<method>`): its manifest
is the source's with each treated adapter's hash (checked on every load) and a `removal` section; `data` and
`pairs` link to the source's, so `detect --testbed <that dir>` asks whether each detector still flags the treated
fakers. A testbed model is never written: the output may not be (or lie inside) the source or another testbed.
"""

from .summary import MIN_BEFORE as MIN_BEFORE
from .summary import RemovalSummary as RemovalSummary
from .summary import find_removals as find_removals
from .summary import mean_ci as mean_ci
from .summary import removal_rate as removal_rate
from .summary import removal_tables as removal_tables
from .treat import EVAL_SETS as EVAL_SETS
from .treat import METHODS as METHODS
from .treat import RemovalConfig as RemovalConfig
from .treat import RemovalMethod as RemovalMethod
from .treat import default_out as default_out
from .treat import noise_hooks as noise_hooks
from .treat import remove as remove
from .treat import training_prompts as training_prompts
