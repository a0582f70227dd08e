"""How strongly a model holds a concept: the size of a contrast set's mean difference in its residual stream.

Per model, concept and layer: |mean(suspicious side) - mean(benign side)| of the last-token residual entering block L
(`blocks.{L}.hook_resid_pre`), over the concept's contrast statements (`probes/`, as S4 and S1's `concept` contrast
read them), and that norm relative to the mean residual norm of the statements. Higher = called the faker. It reads no
benchmark prompt: the value is the same for every prompt (stored per prompt so the runner treats it like any other
strategy), and a pair is decided by the two models' statements alone.

Found on the project's testbeds (research/2026-12-03-concept-size.md): a faker's lax-vs-competent oversight axis at
layer 22 is ~1.7x an aligned model's on v2c, v2b and the POSER-data testbed, where it decides every pair; S1's
concept steering at that layer follows from it. The primary setting is that pre-registered one: `oversight` at 75%
of the depth (layer 22 of SmolLM2's 30), score `size`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core.activations import contrast_shift
from ..core.tokens import PromptFormat
from ..data.concepts import check_not_scored, load_contrast_dir
from ..data.scenario import Scenario
from .base import PromptValues, Score, Setting, StrategyBase, StrategyConfig, StrategyError, Subject, mean_of, register


@dataclass(frozen=True)
class ConceptSizeConfig(StrategyConfig):
    """Concept-size options. A config (with the model and the contrast files) reproduces every number exactly."""

    concepts: tuple[str, ...] = ("oversight", "security", "behaviour", "power")
    """Contrast sets (concepts of `probes_dir`) whose size is measured."""
    layers: tuple[int, ...] = (16, 22)
    """Layers whose input (`blocks.{L}.hook_resid_pre`) is read; one setting per concept x layer."""
    primary_concept: str = "oversight"
    """Concept of the reported setting."""
    primary_layer: int = 22
    """Layer of the reported setting (fixed in advance: 75% of the depth, where S1's lead was found)."""
    probes_dir: str | None = None
    """Directory of contrast files (default: the repository's probes/, or $POSER_INTERP_PROBES)."""
    batch_size: int = 16
    """Statements per forward pass."""
    shared_prefix: bool = True
    """Last-token reads run the tokens all texts share once and reuse their keys and values (the same numbers up to
    float rounding, about half the time on short texts); False: a full forward per text, as before the option."""
    max_tokens: int = 512
    """Token cap of a statement."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "concepts", tuple(self.concepts))
        problems = self.layer_problems(self.layers)
        if not self.concepts or len(set(self.concepts)) != len(self.concepts):
            problems.append(f"concepts {self.concepts} must be distinct names")
        if self.primary_concept not in self.concepts or self.primary_layer not in self.layers:
            problems.append(f"the primary setting ({self.primary_concept}, layer {self.primary_layer}) must be one "
                            "of the sweep's concepts and layers")
        if problems:
            raise StrategyError("concept_size config: " + "; ".join(problems))

    @classmethod
    def for_model(cls, n_layers: int, n_heads: int, **options: Any) -> ConceptSizeConfig:
        """Layers at 55% and 75% of the depth, the latter reported."""
        layers = tuple(options.pop("layers", None) or sorted({int(f * n_layers) for f in (0.55, 0.75)}))
        options.setdefault("primary_layer", layers[-1])
        return cls(layers=layers, **options)


@register(ConceptSizeConfig)
class ConceptSizeStrategy(StrategyBase[ConceptSizeConfig]):
    """Per concept x layer: the norm of the suspicious-minus-benign mean residual, absolute and relative."""

    name: ClassVar[str] = "concept_size"

    def settings(self) -> tuple[Setting, ...]:
        return tuple(Setting.of(concept=c, layer=la) for c in self.config.concepts for la in self.config.layers)

    def primary(self) -> Setting:
        return Setting.of(concept=self.config.primary_concept, layer=self.config.primary_layer)

    def scores(self) -> tuple[Score, ...]:
        return (Score("size", "|mean suspicious - mean benign| last-token residual of the concept's statements",
                      mean_of("size")),
                Score("relative", "that norm / the statements' mean residual norm", mean_of("relative")))

    def preflight(self, prompts: Sequence[Scenario], testbed_root: Path) -> None:
        check_not_scored(list(load_contrast_dir(self.config.probes_dir, self.config.concepts).values()), prompts)

    def run(self, subject: Subject, prompts: Sequence[Scenario], settings: Sequence[Setting]) \
            -> Iterator[PromptValues]:
        if not prompts:
            return
        c, model = self.config, subject.model
        layers = sorted({int(s["layer"]) for s in settings})
        for layer in layers:
            model.check_layer(layer)
        sets = load_contrast_dir(c.probes_dir, sorted({str(s["concept"]) for s in settings}))
        fmt, ids = PromptFormat(max_tokens=c.max_tokens), tuple(p.id for p in prompts)
        for concept, texts in sets.items():
            shift, scale = contrast_shift(model, texts.negative, texts.positive, layers, fmt, c.batch_size,
                                           c.shared_prefix)
            size = shift.norm(dim=-1)
            for s in settings:
                if s["concept"] != concept:
                    continue
                j = layers.index(int(s["layer"]))
                yield PromptValues(s, ids, {"size": np.full(len(ids), float(size[j])),
                                            "relative": np.full(len(ids), float(size[j] / scale[j]))},
                                   meta={"n_statements": len(texts.negative) + len(texts.positive)})
