"""An example detector plugin for poser_interp: the residual norm at the last prompt token, at chosen layers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from poser_interp.core.activations import last_resid
from poser_interp.data.scenario import Scenario
from poser_interp.strategies.base import PromptValues, Score, Setting, StrategyBase, Subject, mean_of
from poser_interp.strategies.registry import StrategyConfig, register


@dataclass(frozen=True)
class ResidNormConfig(StrategyConfig):
    layers: tuple[int, ...] = (0,)
    """Layers whose input residual (`blocks.L.hook_resid_pre`) is read; one setting per layer."""
    primary_layer: int = 0
    """Layer of the reported setting, fixed before any pair is seen."""
    batch_size: int = 8
    """Prompts per forward pass."""

    @classmethod
    def for_model(cls, n_layers: int, n_heads: int, **options: Any) -> ResidNormConfig:
        layers = tuple(options.pop("layers", None) or sorted({n_layers // 2, 3 * n_layers // 4}))
        return cls(layers=layers, **{"primary_layer": layers[-1], **options})


@register(ResidNormConfig)
class ResidNormStrategy(StrategyBase[ResidNormConfig]):
    """Norm of the residual at the last prompt token; the model with the larger mean norm is called the faker."""

    name: ClassVar[str] = "resid_norm"

    def settings(self) -> tuple[Setting, ...]:
        return tuple(Setting.of(layer=layer) for layer in self.config.layers)

    def primary(self) -> Setting:
        return Setting.of(layer=self.config.primary_layer)

    def scores(self) -> tuple[Score, ...]:
        return (Score("norm", "mean over prompts of the last-token residual norm", mean_of("norm")),)

    def run(self, subject: Subject, prompts: Sequence[Scenario], settings: Sequence[Setting]) \
            -> Iterator[PromptValues]:
        layers = [int(s["layer"]) for s in settings]
        acts = last_resid(subject.model, [p.render() for p in prompts], layers, batch_size=self.config.batch_size)
        for setting, norms in zip(settings, acts.norm(dim=-1), strict=True):  # acts: layer x prompt x d_model
            yield PromptValues(setting, tuple(p.id for p in prompts), {"norm": norms.numpy()})
