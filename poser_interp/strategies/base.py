"""The strategy interface: what a detection strategy computes, and how its output becomes a decision.

A strategy computes, for one model and a list of benchmark prompts, *per-prompt values* (e.g. the clean
and noised P(misaligned) of each prompt) at each of its *settings* (e.g. noise at layer 4, scale 1.0; a
strategy without a sweep has the one empty setting). The runner stores these per model, once, and reuses
them for every pair the model is in. A `Score` turns the values of a set of prompts into one number per
model, higher meaning "more likely the faker"; a pair is decided by comparing its two models' scores on
that pair's benchmark prompts. Strategies never learn which model is the faker.

New strategies implement `Strategy` with a `StrategyConfig` dataclass and register themselves with `register`
(`registry.py`), in this package or in an installed package's `poser_interp.strategies` entry point; a strategy
draws its own figures and suite-page section (`StrategyBase.figures`, `StrategyBase.suite_section`, with generic
defaults), so the runner, store, metrics, suite page, ensembles and CLI need no change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from ..core.seeds import stable_seed as stable_seed
from ..data.scenario import Scenario
from ..errors import StrategyError as StrategyError
from .registry import StrategyConfig as StrategyConfig
from .registry import config_dict as config_dict
from .registry import from_config as from_config
from .registry import register as register

Values = Mapping[str, np.ndarray]
"""Per-prompt values of one model at one setting: value name -> array with one float per prompt."""


@dataclass(frozen=True)
class Setting:
    """One point of a strategy's sweep, as sorted (name, value) items; empty for strategies without a sweep."""

    items: tuple[tuple[str, int | float | str], ...] = ()

    @classmethod
    def of(cls, **params: int | float | str) -> Setting:
        return cls(tuple(sorted(params.items())))

    @property
    def key(self) -> str:
        """Stable text key, e.g. 'layer=4,scale=1.0' ('-' for the empty setting)."""
        return ",".join(f"{k}={v}" for k, v in self.items) or "-"

    def __getitem__(self, name: str) -> int | float | str:
        return dict(self.items)[name]

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.items).get(name, default)

    def as_dict(self) -> dict[str, int | float | str]:
        return dict(self.items)


@dataclass(frozen=True, eq=False)
class PromptValues:
    """Per-prompt values a strategy computed for one model at one setting (validated on creation)."""

    setting: Setting
    prompt_ids: tuple[str, ...]
    values: Mapping[str, np.ndarray]
    meta: Mapping[str, float] = field(default_factory=dict)
    """Per-model diagnostics of this setting (e.g. the residual norm the noise was scaled to)."""

    def __post_init__(self) -> None:
        ids = tuple(self.prompt_ids)
        if len(set(ids)) != len(ids):
            raise StrategyError(f"setting {self.setting.key}: duplicate prompt ids")
        arrays = {}
        for name, v in self.values.items():
            a = np.asarray(v, dtype=np.float64).copy()
            if a.shape != (len(ids),):
                raise StrategyError(f"setting {self.setting.key}: value {name!r} has shape {a.shape}, "
                                    f"expected ({len(ids)},), one float per prompt")
            a.flags.writeable = False
            arrays[name] = a
        object.__setattr__(self, "prompt_ids", ids)
        object.__setattr__(self, "values", arrays)
        object.__setattr__(self, "meta", {k: float(v) for k, v in self.meta.items()})

    def subset(self, prompt_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The values of these prompts, in this order (raises if a prompt was not computed)."""
        index = {p: i for i, p in enumerate(self.prompt_ids)}
        missing = [p for p in prompt_ids if p not in index]
        if missing:
            raise StrategyError(f"setting {self.setting.key}: no values for prompts {missing[:5]}; the stored "
                                "results were computed on other prompts (rerun `poser-interp detect` with "
                                "this --out to recompute them)")
        take = np.array([index[p] for p in prompt_ids], dtype=np.int64)
        return {k: v[take] for k, v in self.values.items()}


def _nan_if_empty(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], float]:
    return lambda a: float(fn(a)) if a.size else math.nan


PerPrompt = str | Callable[[Values], np.ndarray]
"""A value name, or a function of the values giving one number per prompt."""


def _per_prompt(what: PerPrompt) -> Callable[[Values], np.ndarray]:
    return (lambda v: v[what]) if isinstance(what, str) else what


def mean_of(what: PerPrompt) -> Callable[[Values], float]:
    """Aggregate: the mean over prompts. A NaN value makes the score NaN (never skipped); no prompts: NaN."""
    get, agg = _per_prompt(what), _nan_if_empty(np.mean)
    return lambda v: agg(get(v))


def median_of(what: PerPrompt) -> Callable[[Values], float]:
    """Aggregate: the median over prompts (NaN if any value is NaN, or there are no prompts)."""
    get, agg = _per_prompt(what), _nan_if_empty(lambda a: math.nan if np.isnan(a).any() else np.median(a))
    return lambda v: agg(get(v))


PairAggregate = Callable[[Values, Values], tuple[float, float]]


@dataclass(frozen=True)
class Score:
    """A named way to turn per-prompt values into a model score (higher = more likely the faker).

    `model` scores one model on any prompt set (used for pairs and for AUROC over models). `pair`, when
    given, scores both models of a pair together on the pair's prompts, e.g. restricted to prompts
    matched in clean confidence; AUROC then still uses `model`.
    """

    name: str
    description: str
    model: Callable[[Values], float]
    pair: PairAggregate | None = None

    def decide(self, aligned: Values, faker: Values) -> tuple[float, float]:
        """(score of the first model, score of the second) on one pair's prompts."""
        if self.pair is not None:
            return self.pair(aligned, faker)
        return self.model(aligned), self.model(faker)


class Subject:
    """A model under test as strategies see it: an opaque id, and its hooked model loaded on first use.

    `memo` lets strategies run on the same model share exact intermediate results (e.g. the clean answer
    logits S2 computes anyway, which the black-box baseline then reads instead of running the model again);
    it lives as long as the subject, i.e. one model of one run.
    """

    def __init__(self, model_id: str, load: Callable[[], Any], spec: Callable[[], Any] | None = None,
                 device: str = "cpu"):
        self.id = model_id
        self._load = load
        self._spec = spec
        self.device = device
        """Where the run computes (`core.devices.check_device`): a strategy's own copies of the model go there too."""
        self._model: Any = None
        self.memo: dict[tuple[Any, ...], Any] = {}

    @property
    def spec(self) -> Any:
        """The model's `ModelSpec` (what its weights are: base, adapter, checkpoint), hash-checked, without loading
        it; StrategyError when the run gave none (strategies that read weight files need it)."""
        if self._spec is None:
            raise StrategyError(f"{self.id}: this run gives strategies no model spec (weight files)")
        return self._spec()

    @property
    def model(self) -> Any:
        if self._model is None:
            self._model = self._load()
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None


def clean_logits_key(prompts: Sequence[Any], max_tokens: int, batch_size: int) -> tuple[Any, ...]:
    """`Subject.memo` key of the clean logits of the two answer choices (n x 2, prompt order) of these prompts,
    computed with `scoring`'s batching (length-sorted chunks of `batch_size`), so the numbers are identical."""
    return ("clean_choice_logits", tuple(p.id for p in prompts), max_tokens, batch_size)


@runtime_checkable
class Strategy(Protocol):
    """What the runner needs from a strategy. See `NoiseStrategy` for a full example."""

    name: ClassVar[str]
    needs_model: ClassVar[bool]
    config: Any
    """A frozen dataclass; stored in the results manifest and compared on resume."""

    def settings(self) -> tuple[Setting, ...]:
        """Every setting of the sweep, in a fixed order."""
        ...

    def primary(self) -> Setting:
        """The setting chosen in advance (not on the evaluated pairs) that summaries report."""
        ...

    def scores(self) -> tuple[Score, ...]:
        """The scores this strategy reports; the first is its chosen (primary) score."""
        ...

    def run(self, subject: Subject, prompts: Sequence[Scenario], settings: Sequence[Setting]) \
            -> Iterator[PromptValues]:
        """Compute per-prompt values for the requested settings, yielding each as soon as it is done."""
        ...

    def preflight(self, prompts: Sequence[Scenario], testbed_root: Path) -> None:
        """Raise, naming the fix, if `run` cannot work on these prompts or this testbed's data; called by the runner
        on every prompt of the run before any model loads, so a run fails in seconds rather than mid-way."""
        ...


C = TypeVar("C")


class StrategyBase(Generic[C]):
    """What every built-in strategy shares: its config (the registered config's defaults when none is given), and the
    one empty setting as its sweep (a strategy with a sweep overrides `settings` and `primary`)."""

    name: ClassVar[str]
    needs_model: ClassVar[bool] = True
    exact_arithmetic: ClassVar[bool] = False
    """True: computed in fp32 whatever the run's `precision` (a strategy whose signal is smaller than bf16's
    resolution; the runner reads it with getattr, so strategies outside this package need not declare it)."""
    own_model: ClassVar[bool] = False
    """True: computed on the strategy's own local copy of the model (S3 trains one), never through the forward seam
    (`core.forward`), so `--backend` does not change where it runs; its rows say backend 'local' on nnsight runs."""
    remote_ok: ClassVar[bool] = True
    """False: needs the model's weights here, so `--remote` (NDIF) is refused before anything loads, with
    `local_reason`. The runner reads both with getattr (strategies outside this package need not declare them)."""
    local_reason: ClassVar[str] = ""
    """Why the strategy needs the weights here (the refusal's text)."""
    config_class: ClassVar[type]
    """Set by `register`."""

    def __init__(self, config: C | None = None):
        self.config: C = config if config is not None else self.config_class()

    def settings(self) -> tuple[Setting, ...]:
        return (Setting(),)

    def primary(self) -> Setting:
        return Setting()

    def quick_settings(self) -> tuple[Setting, ...]:
        """What a `--quick` run computes: the primary setting, plus the settings that come out of the same forward
        passes at no extra cost (a strategy whose passes give its whole sweep overrides this). See
        `runner.quick_settings`."""
        return (self.primary(),)

    def preflight(self, prompts: Sequence[Scenario], testbed_root: Path) -> None:
        """Nothing to check by default (`Strategy.preflight`)."""

    def figures(self, ev: Any, store: Any, kit: Any) -> dict[str, Any]:
        """This strategy's figures (name -> plotly Figure), drawn from the evaluation `ev` and the results `store`
        only (never by recomputing); `detect` writes them and the suite page shows them. `kit` is
        `poser_interp.viz.kit`, the package's figure functions, handed in so that strategies never import the
        presentation layer. Default: accuracy and AUROC of the chosen score at every stored setting."""
        return {f"{self.name}_settings": kit.setting_figure(ev, self.name)}

    def suite_section(self, ev: Any, store: Any, kit: Any) -> SuiteSection:
        """This strategy's part of the suite page. Default: its name, the first line of its docstring, a table of
        its scores at the chosen setting, and its `figures`."""
        return default_section(self, ev, self.figures(ev, store, kit))


@dataclass(frozen=True)
class SuiteSection:
    """A strategy's part of the suite page (drawn by the page; values are shown as text)."""

    title: str
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[Any, ...], ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)
    """Figure name (unique on the page, e.g. prefixed with the strategy's name) -> plotly Figure."""


def default_section(strategy: Any, ev: Any, figures: Mapping[str, Any]) -> SuiteSection:
    """`StrategyBase.suite_section`'s default with these figures: the scores of the chosen setting in a table."""
    primary = ev.primary(strategy.name)
    rows = tuple((r.score + (" *" if r.is_primary else ""), r.description, r.summary.accuracy_text(),
                  r.summary.auroc_text(), f"{r.summary.n_decided}/{r.summary.n_pairs}")
                 for r in ev.find(strategy.name, setting=primary.setting))
    doc = (type(strategy).__doc__ or "").strip().splitlines()
    chosen = f" Chosen setting: {primary.setting.key}." if primary.setting.items else ""
    return SuiteSection(strategy.name, f"{doc[0] if doc else ''}{chosen}".strip(),
                        ("score", "meaning", "accuracy (95% CI)", "AUROC (95% CI)", "decided"), rows, figures)


def figures_of(strategy: Any, ev: Any, store: Any, kit: Any) -> dict[str, Any]:
    """`strategy.figures(...)`, or the default for a strategy that implements `Strategy` without `StrategyBase`."""
    own = getattr(strategy, "figures", None)
    return dict(own(ev, store, kit) if own is not None else StrategyBase.figures(strategy, ev, store, kit))


def section_of(strategy: Any, ev: Any, store: Any, kit: Any) -> SuiteSection:
    """`strategy.suite_section(...)`, or the default for a strategy that does not derive from `StrategyBase`."""
    own = getattr(strategy, "suite_section", None)
    return own(ev, store, kit) if own is not None else default_section(strategy, ev,
                                                                        figures_of(strategy, ev, store, kit))
