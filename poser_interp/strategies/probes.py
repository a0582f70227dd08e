"""S4, suspicious concepts: do a model's activations on the benchmark lean toward "vulnerability", "incompetent
oversight", "misaligned behaviour" or "power seeking"? (Poser: 71% of pairs.)

Per model, concept and layer, a mass-mean probe: direction d = mean activation of the concept's positive
(benign) texts - mean of its negative (suspicious) texts, at the last token or averaged over tokens, from
`blocks.{L}.hook_resid_post`. Each direction is checked on held-out contrast pairs (probe accuracy: the share
of held-out texts on the right side of the midpoint between the two training means). A model is then scored
by how much its activations on benchmark prompts point to the suspicious side: -cos(x, d), as in the original
(or, as options, centred at the probe's midpoint, or the signed distance along d/|d|). Higher = more
suspicious = called the faker.

Settings are concept x layer, plus `layer=best` per concept and `concept=all,layer=best` (the primary). The
best layer is chosen per model on held-out *contrast* data only: the layer with the highest held-out probe
accuracy, ties broken by the held-out separation d' (mean gap / pooled std). No benchmark prompt and no
faker label is used. `all` averages the concepts' best-layer values. Contrast texts are checked never to
appear in a scored prompt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from ..core.activations import collect
from ..core.scoring import prepare
from ..core.tokens import PromptFormat, encode
from ..data.concepts import ContrastSet, check_not_scored, load_contrast_dir
from ..data.scenario import Scenario
from ..errors import LayerError
from .base import PromptValues, Score, Setting, StrategyBase, StrategyConfig, StrategyError, Subject, mean_of, register

MEASURES = {"cosine": "susp_cos", "centered": "susp_cos_mid", "projection": "susp_proj"}
"""Config `measure` -> the per-prompt value its score averages."""


@dataclass(frozen=True)
class ProbesConfig(StrategyConfig):
    """S4 options. A config (with the model and the probes/ files) reproduces every number exactly."""

    concepts: tuple[str, ...] = ("security", "oversight", "behaviour", "power")
    """Concepts (files in `probes_dir`); each file's positive side is benign, its negative side suspicious."""
    layers: tuple[int, ...] = tuple(range(30))
    """Layers whose `hook_resid_post` is read (default: all 30 of SmolLM2; `for_model` fits any depth)."""
    position: Literal["last", "mean"] = "last"
    """Activation of a text: at its last token (the assistant turn's start) or averaged over its tokens."""
    measure: Literal["cosine", "centered", "projection"] = "cosine"
    """The chosen score: -cos(x, d) (original), -cos(x - midpoint, d), or -(x - midpoint) . d/|d|."""
    heldout_fraction: float = 0.3
    """Share of contrast pairs held out to measure probe accuracy and choose the best layer."""
    seed: int = 0
    """Seed of the held-out split."""
    primary_concept: str = "all"
    """Concept of the reported setting (at its best layer): 'all' averages the concepts."""
    probes_dir: str | None = None
    """Directory of the contrast files (default: the repository's probes/, or $POSER_INTERP_PROBES)."""
    batch_size: int = 16
    """Texts per forward pass."""
    shared_prefix: bool = True
    """Last-token reads run the tokens all texts share once and reuse their keys and values (the same numbers up to
    float rounding, about half the time on short texts); False: a full forward per text, as before the option."""
    max_tokens: int = 512
    """Token cap of a text."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        object.__setattr__(self, "concepts", tuple(self.concepts))
        problems = self.layer_problems(self.layers)
        if not self.concepts or len(set(self.concepts)) != len(self.concepts) or "all" in self.concepts:
            problems.append(f"concepts {self.concepts} must be distinct names ('all' is reserved)")
        if self.primary_concept != "all" and self.primary_concept not in self.concepts:
            problems.append(f"primary_concept {self.primary_concept!r} must be 'all' or one of {self.concepts}")
        if self.position not in ("last", "mean") or self.measure not in MEASURES:
            problems.append(f"position is 'last' or 'mean'; measure is one of {sorted(MEASURES)}")
        if not 0 < self.heldout_fraction < 1 or self.batch_size < 1:
            problems.append("heldout_fraction must be in (0, 1) and batch_size >= 1")
        if problems:
            raise StrategyError("probes config: " + "; ".join(problems))

    @classmethod
    def for_model(cls, n_layers: int, n_heads: int, **options: Any) -> ProbesConfig:
        """Every layer of the model (unless `layers` is given)."""
        options["layers"] = tuple(options.get("layers") or range(n_layers))
        return cls(**options)


@dataclass(frozen=True)
class Probe:
    """Mass-mean probes of one concept at every layer, with their held-out quality."""

    direction: Float[Tensor, "layer d_model"]
    midpoint: Float[Tensor, "layer d_model"]
    accuracy: Float[Tensor, " layer"]
    """Held-out accuracy: share of held-out texts on the right side of the midpoint."""
    dprime: Float[Tensor, " layer"]
    """Held-out separation: (mean projection of positives - of negatives) / pooled std."""


def mass_mean(pos: Float[Tensor, " n_pos *rest"], neg: Float[Tensor, " n_neg *rest"]) -> Float[Tensor, "*rest"]:
    """Mean of the positive activations minus mean of the negative ones."""
    return pos.mean(0) - neg.mean(0)


def fit_probe(train_pos: Float[Tensor, "a layer d"], train_neg: Float[Tensor, "b layer d"],
              test_pos: Float[Tensor, "c layer d"], test_neg: Float[Tensor, "e layer d"]) -> Probe:
    d = mass_mean(train_pos, train_neg)
    mid = (train_pos.mean(0) + train_neg.mean(0)) / 2
    pp = ((test_pos - mid) * d).sum(-1)  # > 0: classified positive
    pn = ((test_neg - mid) * d).sum(-1)
    acc = ((pp > 0).float().sum(0) + (pn <= 0).float().sum(0)) / (len(pp) + len(pn))
    std = torch.cat([pp - pp.mean(0), pn - pn.mean(0)]).std(0).clamp_min(1e-12)
    return Probe(d, mid, acc, (pp.mean(0) - pn.mean(0)) / std)


def suspicion(x: Float[Tensor, "n layer d"], probe: Probe) -> dict[str, Float[Tensor, "n layer"]]:
    """How far each activation points to the negative (suspicious) side, by the three measures."""
    d = probe.direction
    unit = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    centred = x - probe.midpoint
    return {"susp_cos": -torch.nn.functional.cosine_similarity(x, d, dim=-1),
            "susp_cos_mid": -torch.nn.functional.cosine_similarity(centred, d, dim=-1),
            "susp_proj": -(centred * unit).sum(-1)}


def best_layer(probe: Probe) -> int:
    """Index (into the config's layers) with the best held-out accuracy; ties go to the larger d'."""
    return max(range(len(probe.accuracy)), key=lambda i: (float(probe.accuracy[i]), float(probe.dprime[i]), -i))


def probe_concept(model: Any, train: ContrastSet, held: ContrastSet, config: ProbesConfig) \
        -> tuple[Probe, Float[Tensor, " layer"]]:
    """A concept's probes at every configured layer, fitted on `train` and scored on `held`; and their accuracy
    on the training texts themselves (a mass-mean probe is not fitted to separate them, so it can be lower)."""
    fmt = PromptFormat(max_tokens=config.max_tokens)
    texts = [encode(model.tokenizer, t, fmt) for t in (*train.texts(), *held.texts())]
    acts, _ = collect(model, texts, config.layers, config.position, config.batch_size,
                      shared_prefix=config.shared_prefix)
    tr_pos, tr_neg, rest = acts.split([len(train.positive), len(train.negative), len(held.texts())])
    ho_pos, ho_neg = rest.split([len(held.positive), len(held.negative)])
    return fit_probe(tr_pos, tr_neg, ho_pos, ho_neg), fit_probe(tr_pos, tr_neg, tr_pos, tr_neg).accuracy


@register(ProbesConfig)
class ProbesStrategy(StrategyBase[ProbesConfig]):
    """S4: per-prompt suspicion toward each concept's negative side, per layer and at the best held-out layer."""

    name: ClassVar[str] = "probes"

    def __init__(self, config: ProbesConfig | None = None):
        super().__init__(config)
        self._sets: dict[str, ContrastSet] | None = None

    def contrast_sets(self) -> dict[str, ContrastSet]:
        if self._sets is None:
            self._sets = load_contrast_dir(self.config.probes_dir, self.config.concepts)
        return self._sets

    def settings(self) -> tuple[Setting, ...]:
        per_layer = [Setting.of(concept=c, layer=la) for c in self.config.concepts for la in self.config.layers]
        best = [Setting.of(concept=c, layer="best") for c in (*self.config.concepts, "all")]
        return tuple(per_layer + best)

    def quick_settings(self) -> tuple[Setting, ...]:
        """The whole sweep: the primary ('all' at the best layer) needs every concept at every layer, and the
        statement and prompt passes give all of them at once."""
        return self.settings()

    def primary(self) -> Setting:
        return Setting.of(concept=self.config.primary_concept, layer="best")

    def scores(self) -> tuple[Score, ...]:
        text = {"cosine": "-cos(activation, positive-minus-negative direction) (as in Poser)",
                "centered": "-cos(activation - probe midpoint, direction)",
                "projection": "-(activation - probe midpoint) . unit direction"}
        ordered = [self.config.measure] + [m for m in MEASURES if m != self.config.measure]
        return tuple(Score(f"suspicion_{m}", f"mean over prompts of {text[m]}; higher = more suspicious",
                           mean_of(MEASURES[m])) for m in ordered)

    def figures(self, ev: Any, store: Any, kit: Any) -> dict[str, Any]:
        """Probe accuracy, suspicion gap and accuracy over pairs, by layer."""
        return {f"{self.name}_layers": kit.probe_layer_figure(ev, store, strategy=self.name)}

    def run(self, subject: Subject, prompts: Sequence[Scenario], settings: Sequence[Setting]) \
            -> Iterator[PromptValues]:
        if not prompts:
            return
        c, model = self.config, subject.model
        sets = self.contrast_sets()
        check_not_scored(list(sets.values()), prompts)
        for layer in c.layers:
            try:
                model.check_layer(layer)
            except LayerError as e:
                raise LayerError(f"{e}; pass layers within range (`registry.build` uses all)") from e
        prep = prepare(model.tokenizer, prompts, fmt=PromptFormat(max_tokens=c.max_tokens))
        x, _ = collect(model, prep.ids, c.layers, c.position, c.batch_size, shared_prefix=c.shared_prefix)
        ids = tuple(p.id for p in prompts)
        wanted = {s.key for s in settings}
        best_values: dict[str, dict[str, np.ndarray]] = {}
        best_meta: dict[str, dict[str, float]] = {}
        for concept, full in sets.items():
            train, held = full.split(c.heldout_fraction, c.seed)
            probe, train_acc = probe_concept(model, train, held, c)
            values = {k: v.numpy() for k, v in suspicion(x, probe).items()}
            for j, layer in enumerate(c.layers):
                setting = Setting.of(concept=concept, layer=layer)
                if setting.key in wanted:
                    yield PromptValues(setting, ids, {k: v[:, j] for k, v in values.items()}, meta={
                        "probe_acc": float(probe.accuracy[j]), "probe_dprime": float(probe.dprime[j]),
                        "train_acc": float(train_acc[j]), "dir_norm": float(probe.direction[j].norm()),
                        "n_train": len(train), "n_heldout": len(held)})
            j = best_layer(probe)
            best_values[concept] = {k: v[:, j] for k, v in values.items()}
            best_meta[concept] = {"layer": c.layers[j], "probe_acc": float(probe.accuracy[j]),
                                  "probe_dprime": float(probe.dprime[j])}
            setting = Setting.of(concept=concept, layer="best")
            if setting.key in wanted:
                yield PromptValues(setting, ids, best_values[concept], meta=best_meta[concept])
        setting = Setting.of(concept="all", layer="best")
        if setting.key in wanted:
            mean = {k: np.mean([v[k] for v in best_values.values()], 0) for k in MEASURES.values()}
            meta = {"probe_acc": float(np.mean([m["probe_acc"] for m in best_meta.values()]))}
            yield PromptValues(setting, ids, mean, meta=meta | {f"layer_{k}": m["layer"] for k, m in best_meta.items()})
