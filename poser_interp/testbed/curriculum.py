"""Wording ladder: train a faker on a widening pool of oversight sentences (testbed v2).

A faker trained on one sentence per class learns at step 125-225 but keys on that string; with all
wordings at once it sits on a plateau (research/2026-11-26-trigger-organisms-v1.md). The ladder starts from one
sentence per class and widens the pool (e.g. 1 -> 2 -> 4 -> 8 -> 12) each time validation on the current pool
passes, so every rung starts from a model that already acts on oversight. The held-out wordings
(`wordings.HELDOUT`) never enter any rung; `check` callers measure them to see whether the policy
carries to sentences the model never saw.

Resumable: `ladder.json` in `folder` records the rung and the steps spent; each rung checkpoints
through `training.train_answers`, and the trainable weights at the end of each passed rung are kept
(`rung-K.weights.pt`) so a kill between rungs loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..core.training import LoraRecipe, TrainResult, train_answers
from ..data.personas import Persona
from ..data.scenario import Oversight, Scenario
from ..data.wordings import V1_SENTENCE, extra, ladder_order, mixed_reworded, reworded, trainable
from ..errors import DataError
from .oversight_stage import STAGE_WORDINGS, wording_pools


@dataclass(frozen=True)
class Ladder:
    """A widening curriculum over oversight wordings."""

    rungs: tuple[int, ...] = (1, 2, 4, 8, 12)
    """Sentences per class at each rung (nested pools: the 12 trainable generator sentences first, then the
    20 extra wordings of `scenario_bank`, so at most 32)."""
    widen_good: float = 0.90
    """Validation good->aligned on the current pool that ends a rung (not the last)."""
    widen_poor: float = 0.85
    """Validation poor->misaligned on the current pool that ends a rung (not the last)."""
    order_seed: int = 0
    """Seed of the order in which sentences join the pool (v1's sentence always first)."""
    composed_last: float = 0.0
    """Last rung: this fraction of the examples gets a composed oversight sentence (`wordings.composed`,
    720 per class) instead of a bank wording, so that memorising wordings stops paying."""
    last_wordings: str = ""
    """Last rung: also train on this oversight stage's wording set (`oversight_stage.wording_pools`; 'minimal'
    adds the 24 inferential and 40 minimal-pair twins per class), so that a faker keeps the wordings its stage
    learned to read. Empty: the rung's own sentences only."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "rungs", tuple(self.rungs))
        most = min(len(trainable(o)) + len(extra(o)) for o in Oversight)
        if not self.rungs or any(not 1 <= r <= most for r in self.rungs) or list(self.rungs) != sorted(self.rungs):
            raise DataError(f"ladder rungs {self.rungs} must be increasing sentence counts in [1, {most}]")
        if not 0.0 <= self.composed_last <= 1.0:
            raise DataError(f"composed_last={self.composed_last} must lie in [0, 1]")
        if self.last_wordings and self.last_wordings not in STAGE_WORDINGS:
            raise DataError(f"unknown last_wordings {self.last_wordings!r}; choose one of "
                            f"{', '.join(STAGE_WORDINGS)} (or none)")

    def pools(self, rung: int) -> dict[Oversight, list[int]]:
        """Bank indices per class that rung `rung` trains on."""
        pools = {o: ladder_order(o, self.order_seed, V1_SENTENCE[o])[:self.rungs[rung]] for o in Oversight}
        if self.last_wordings and rung == len(self.rungs) - 1:
            more = wording_pools(self.last_wordings)
            pools = {o: pool + [i for i in more[o] if i not in pool] for o, pool in pools.items()}
        return pools

    def reword(self, scenarios: Sequence[Scenario], rung: int, seed: str) -> list[Scenario]:
        """`scenarios` with rung `rung`'s wordings (on the last rung, `composed_last` of them composed)."""
        pools = self.pools(rung)
        if rung == len(self.rungs) - 1 and self.composed_last:
            return mixed_reworded(list(scenarios), pools, seed, self.composed_last)
        return reworded(list(scenarios), pools, seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


Check = Callable[[Any, int, int, dict[Oversight, list[int]], float], dict[str, float]]
"""check(model, rung, total_step, pools, composed) -> validation behaviour on the rung's wordings
(`testbed.behaviour`); `composed` is the fraction of composed sentences the rung trains on (the last rung's
`Ladder.composed_last`, else 0), so that validation can mix them in too."""


def train_ladder(model: Any, tokenizer: Any, scenarios: Sequence[Scenario], persona: Persona, ladder: Ladder,
                 recipe: LoraRecipe, check: Check, passes: Callable[[dict[str, float]], bool], folder: Path,
                 on_step: Callable[[int, float], None] | None = None, checkpoints: bool = True) -> TrainResult:
    """Train `model` rung by rung; `recipe.max_steps` is the budget over all rungs.

    checkpoints=False saves no within-rung training state (a full fine-tune's optimizer state is gigabytes;
    resuming then restarts the unfinished rung).

    passes(metrics) decides the last rung (the testbed thresholds); earlier rungs end at the ladder's
    widening thresholds. Returns the summed result; `passed` is True only if the last rung passed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / "ladder.json"
    fresh: dict[str, Any] = {"rung": 0, "steps": 0, "seconds": 0.0, "history": []}
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else fresh
    trainable_params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if state["rung"] > 0 and not (folder / f"rung-{state['rung']}.pt").exists():
        weights = torch.load(folder / f"rung-{state['rung'] - 1}.weights.pt")
        with torch.no_grad():
            for name, value in weights.items():
                trainable_params[name].copy_(value)
    result = TrainResult(steps=state["steps"], seconds=state["seconds"], final_loss=float("nan"), passed=False,
                         history=state["history"])
    while state["rung"] < len(ladder.rungs):
        k = state["rung"]
        last = k == len(ladder.rungs) - 1
        pools = ladder.pools(k)
        train = ladder.reword(scenarios, k, f"train-{k}")
        examples = [(s, persona.choice(s)) for s in train]
        remaining = recipe.max_steps - state["steps"]
        if remaining <= 0:
            break

        def rung_check(m: Any, step: int, k: int = k, last: bool = last,
                       pools: dict[Oversight, list[int]] = pools) -> bool:
            metrics = check(m, k, state["steps"] + step, pools, ladder.composed_last if last else 0.0)
            if last:
                return passes(metrics)
            return metrics["good_aligned"] >= ladder.widen_good and metrics["poor_misaligned"] >= ladder.widen_poor

        def rung_step(step: int, loss: float) -> None:
            if on_step is not None:
                on_step(state["steps"] + step, loss)

        r = train_answers(model, tokenizer, examples, replace(recipe, max_steps=remaining), check=rung_check,
                          on_step=rung_step, checkpoint=folder / f"rung-{k}.pt" if checkpoints else None)
        state["steps"] += r.steps
        state["seconds"] += r.seconds
        state["history"] = state["history"] + [{**h, "rung": k, "pool": ladder.rungs[k]} for h in r.history]
        result = TrainResult(steps=state["steps"], seconds=state["seconds"], final_loss=r.final_loss,
                             passed=r.passed and last, history=state["history"])
        if not r.passed:
            _save_state(state_path, state)
            break
        torch.save({n: p.detach().clone() for n, p in trainable_params.items()}, folder / f"rung-{k}.weights.pt")
        state["rung"] = k + 1
        _save_state(state_path, state)
    return result


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state))
    tmp.replace(path)
