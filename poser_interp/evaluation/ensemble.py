"""Held-out choices over stored results: the best single strategy, two ensembles, and a persona-family transfer.

Everything here reads an `runner.Evaluation` (stored per-model and per-pair scores); nothing is recomputed.

Leave-one-persona-out, strict form: pairs are grouped into cells by (aligned persona, faker persona); each cell
is decided by choices and weights fitted on the pairs that share *neither* persona with it (so no model, and no
persona's training data, of a decided pair is seen while fitting). With two aligned and two faker personas each
cell is fitted on the one opposite cell. A cell without such pairs is left undecided (NaN, reported).

Per fold, on the training pairs only:
- best single: every (strategy, setting, score) of the candidate strategies is scored by its accuracy over the
  training pairs; the best decides the cell;
- members: each candidate strategy's best (setting, score) the same way;
- rank average: each member's score becomes its percentile among the training models' scores
  (`scipy.stats.percentileofscore`), averaged over the members above chance on the training pairs;
- logistic: members' scores standardized on the training models, then a logistic regression without intercept
  on the faker-minus-aligned differences of the training pairs (both orientations: symmetric by design).

Accuracy is over pairs (each pair decided once, in its cell), with the model-resampling bootstrap of
`metrics`. The AUROC of a held-out method compares, inside each cell, every aligned model with every faker on
their scores over all their prompts, with that cell's fitted choice: P(faker scores higher), pooled over cells.

Transfer: each strategy's (setting, score) chosen on the pairs of one persona family (both models of one motive,
e.g. resources: steward x grabber), then evaluated on the other family's pairs, and the reverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..strategies.registry import baseline_names
from .metrics import MetricSummary, accuracy, bootstrap_accuracy_by_model, pair_outcomes
from .runner import Evaluation, Result

PairModels = Mapping[str, Mapping[str, Any]]
"""pair id -> {"aligned": model id, "faker": model id, ...} (a results manifest's `pairs`)."""
Combine = Callable[[Sequence[float]], float]
"""Members' scores of one model (in member order) -> the combined score (higher = the faker)."""


@dataclass(frozen=True)
class Fold:
    """One held-out cell: the pairs it decides and the pairs its choices are fitted on (sharing no persona)."""

    label: str
    test: tuple[str, ...]
    train: tuple[str, ...]


def model_groups(models: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, str], dict[str, str]]:
    """(model -> persona, model -> family) from a testbed manifest's models; the family is the persona's motive
    ("resources", "power"), or the persona itself where it has none (POSER data)."""
    persona = {m: str(e.get("persona") or m.rsplit("-s", 1)[0]) for m, e in models.items()}
    family = {m: str(e.get("motive") or persona[m]) for m, e in models.items()}
    return persona, family


def persona_folds(pairs: PairModels, persona: Mapping[str, str], pair_ids: Sequence[str] | None = None) -> list[Fold]:
    """Strict leave-one-persona-out folds over `pair_ids` (default: all): one per (aligned, faker) persona cell."""
    ids = sorted(pair_ids if pair_ids is not None else pairs)
    cell = {p: (persona[pairs[p]["aligned"]], persona[pairs[p]["faker"]]) for p in ids}
    folds = []
    for pa, pf in sorted(set(cell.values())):
        test = tuple(p for p in ids if cell[p] == (pa, pf))
        train = tuple(p for p in ids if cell[p][0] != pa and cell[p][1] != pf)
        folds.append(Fold(f"{pa} x {pf}", test, train))
    return folds


@dataclass(frozen=True)
class View:
    """A result's scores restricted to some pairs and models: all that a fit may read."""

    result: Result
    pair_scores: dict[str, tuple[float, float]]
    model_scores: dict[str, float]

    @classmethod
    def of(cls, result: Result, pair_ids: Sequence[str], pairs: PairModels) -> View:
        models = {pairs[p][k] for p in pair_ids for k in ("aligned", "faker")}
        return cls(result, {p: result.pair_scores[p] for p in pair_ids},
                   {m: s for m, s in result.model_scores.items() if m in models})

    def accuracy(self) -> float:
        if not self.pair_scores:
            return math.nan
        a, f = zip(*self.pair_scores.values(), strict=True)
        return accuracy(pair_outcomes(a, f))


def choose(views: Sequence[View]) -> View | None:
    """The view with the best training accuracy (ties: the strategy's primary, then the first); None if none
    is decided."""
    scored = [(v.accuracy(), v.result.is_primary, -i, v) for i, v in enumerate(views)]
    scored = [s for s in scored if not math.isnan(s[0])]
    return max(scored, key=lambda s: s[:3])[3] if scored else None


def fit_rank_average(members: Sequence[View]) -> Combine:
    """Mean over members of the score's percentile among that member's training-model scores."""
    from scipy.stats import percentileofscore

    refs = [np.array([s for s in v.model_scores.values() if not math.isnan(s)]) for v in members]

    def combine(scores: Sequence[float]) -> float:
        ranks = [percentileofscore(ref, s, kind="mean") / 100 for ref, s in zip(refs, scores, strict=True)
                 if ref.size and not math.isnan(s)]
        return float(np.mean(ranks)) if ranks else math.nan

    return combine


@dataclass(frozen=True)
class Logistic:
    """A fitted logistic combination: member scores standardized, then weighted (no intercept)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    n_train: int

    def __call__(self, scores: Sequence[float]) -> float:
        x = np.asarray(scores, dtype=np.float64)
        if np.isnan(x).any() or not self.weights.size:
            return math.nan
        return float(((x - self.mean) / self.scale) @ self.weights)


def fit_logistic(members: Sequence[View], c: float = 1.0) -> Logistic:
    """Standardize on the training models, fit on the training pairs' faker-minus-aligned differences."""
    from sklearn.linear_model import LogisticRegression

    ms = np.array([[v.model_scores.get(m, math.nan) for v in members] for m in sorted(members[0].model_scores)]) \
        if members else np.zeros((0, 0))
    with np.errstate(all="ignore"):
        mean = np.nanmean(ms, axis=0) if ms.size else np.zeros(len(members))
        scale = np.nanstd(ms, axis=0) if ms.size else np.ones(len(members))
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    diffs = []
    for p in sorted(members[0].pair_scores) if members else []:
        a = np.array([v.pair_scores[p][0] for v in members])
        f = np.array([v.pair_scores[p][1] for v in members])
        d = (f - a) / scale
        if not np.isnan(d).any():
            diffs.append(d)
    if not diffs or not np.any(diffs):
        return Logistic(mean, scale, np.zeros(0), len(diffs))
    x = np.vstack([np.array(diffs), -np.array(diffs)])
    y = np.r_[np.ones(len(diffs)), np.zeros(len(diffs))]
    model = LogisticRegression(fit_intercept=False, C=c).fit(x, y)
    return Logistic(mean, scale, model.coef_[0].copy(), len(diffs))


@dataclass(frozen=True)
class FoldFit:
    """What one fold chose and fitted, on its training pairs only."""

    fold: Fold
    best: Result | None
    members: tuple[Result, ...]
    """Each candidate strategy's best (setting, score) on the training pairs (the logistic combination's inputs)."""
    ranked: tuple[Result, ...]
    """The members above chance on the training pairs (the rank average's inputs)."""
    rank_average: Combine | None
    logistic: Logistic | None


def fit_fold(ev: Evaluation, fold: Fold, pairs: PairModels, candidates: Sequence[str]) -> FoldFit:
    """Choose and fit on `fold.train` only (through `View`s that hold nothing else)."""
    views = {name: [View.of(r, fold.train, pairs) for r in ev.find(name)] for name in candidates}
    best = choose([v for vs in views.values() for v in vs]) if fold.train else None
    chosen = [c for c in (choose(vs) for vs in views.values()) if c is not None] if fold.train else []
    ranked = [v for v in chosen if v.accuracy() > 0.5]
    return FoldFit(fold, best.result if best else None, tuple(v.result for v in chosen),
                   tuple(v.result for v in ranked), fit_rank_average(ranked) if ranked else None,
                   fit_logistic(chosen) if chosen else None)


@dataclass(frozen=True)
class HeldOutResult:
    """A held-out method decided on every pair, each in its own fold."""

    name: str
    description: str
    summary: MetricSummary
    pair_scores: dict[str, tuple[float, float]]
    choices: dict[str, str]
    """fold label -> what it chose (the best single's setting, or the members and weights)."""


def _scorers(fit: FoldFit, how: str) -> tuple[Callable[[str, int], float], Callable[[str], float]] | None:
    """(pair id, side 0/1 -> score; model -> score over all its prompts) of one fold's fitted method, or None."""
    if how == "best_single":
        best = fit.best
        if best is None:
            return None

        def pair_best(p: str, i: int) -> float:
            return best.pair_scores[p][i]

        def model_best(m: str) -> float:
            return best.model_scores.get(m, math.nan)

        return pair_best, model_best
    combine = fit.rank_average if how == "rank_average" else fit.logistic
    if combine is None:
        return None
    members = fit.ranked if how == "rank_average" else fit.members

    def pair_score(p: str, i: int) -> float:
        return combine([r.pair_scores[p][i] for r in members])

    def model_score(m: str) -> float:
        return combine([r.model_scores.get(m, math.nan) for r in members])

    return pair_score, model_score


def _decide(fits: Sequence[FoldFit], pairs: PairModels, how: str) -> tuple[dict[str, tuple[float, float]],
                                                                         list[tuple[str, str, float]]]:
    """Pair scores of every decided pair, and (aligned, faker, outcome) model comparisons inside each cell."""
    pair_scores: dict[str, tuple[float, float]] = {}
    comparisons: list[tuple[str, str, float]] = []
    for fit in fits:
        scorers = _scorers(fit, how)
        for p in fit.fold.test:
            pair_scores[p] = (scorers[0](p, 0), scorers[0](p, 1)) if scorers else (math.nan, math.nan)
        aligned = sorted({pairs[p]["aligned"] for p in fit.fold.test})
        fakers = sorted({pairs[p]["faker"] for p in fit.fold.test})
        for a in aligned:
            for f in fakers:
                o = float(pair_outcomes([scorers[1](a)], [scorers[1](f)])[0]) if scorers else math.nan
                comparisons.append((a, f, o))
    return pair_scores, comparisons


def _summary(pair_ids: Sequence[str], pairs: PairModels, pair_scores: Mapping[str, tuple[float, float]],
             comparisons: Sequence[tuple[str, str, float]], n_boot: int, seed: int) -> MetricSummary:
    out = pair_outcomes([pair_scores[p][0] for p in pair_ids], [pair_scores[p][1] for p in pair_ids])
    ci = bootstrap_accuracy_by_model(out, [pairs[p]["aligned"] for p in pair_ids],
                                     [pairs[p]["faker"] for p in pair_ids], n_boot, seed)
    comp = np.array([c[2] for c in comparisons], dtype=np.float64)
    auc_ci = bootstrap_accuracy_by_model(comp, [c[0] for c in comparisons], [c[1] for c in comparisons], n_boot,
                                         seed) if comp.size else (math.nan, math.nan)
    models = sorted({pairs[p][k] for p in pair_ids for k in ("aligned", "faker")})
    nan_models = sorted({m for a, f, o in comparisons if math.isnan(o) for m in (a, f)})
    return MetricSummary(accuracy=accuracy(out), accuracy_ci=ci, n_pairs=len(pair_ids),
                         undecided_pairs=tuple(p for p, o in zip(pair_ids, out, strict=True) if np.isnan(o)),
                         auroc=accuracy(comp) if comp.size else math.nan, auroc_ci=auc_ci, n_models=len(models),
                         nan_models=tuple(nan_models))


def _short(r: Result) -> str:
    return f"{r.strategy} {r.setting.key} {r.score}"


DESCRIPTIONS = {
    "best_single": "best single (strategy, setting, score) by accuracy on the fold's training pairs",
    "rank_average": "mean percentile rank of each strategy's held-out-chosen score",
    "logistic": "logistic regression on standardized held-out-chosen scores (no intercept)",
}


def held_out(ev: Evaluation, pairs: PairModels, persona: Mapping[str, str], candidates: Sequence[str] | None = None,
             n_boot: int = 2000, seed: int = 0) -> tuple[list[FoldFit], list[HeldOutResult]]:
    """Fit every fold and decide every pair with the best single strategy, rank average and logistic ensemble."""
    pair_ids = sorted(ev.pair_prompts)
    names = [n for n in (candidates or ev.strategies()) if n not in baseline_names()]
    fits = [fit_fold(ev, fold, pairs, names) for fold in persona_folds(pairs, persona, pair_ids)]
    results = []
    for how in ("best_single", "rank_average", "logistic"):
        scores, comparisons = _decide(fits, pairs, how)
        choices = {}
        for fit in fits:
            if how == "best_single":
                choices[fit.fold.label] = _short(fit.best) if fit.best else "undecided (no training pairs)"
            elif not fit.fold.train:
                choices[fit.fold.label] = "undecided (no training pairs)"
            elif how == "rank_average" and not fit.ranked:
                choices[fit.fold.label] = "undecided (no member above chance on the training pairs)"
            elif how == "logistic" and fit.logistic is not None and fit.logistic.weights.size:
                choices[fit.fold.label] = ", ".join(f"{_short(r)}: {w:+.2f}" for r, w in
                                                    zip(fit.members, fit.logistic.weights, strict=True))
            else:
                choices[fit.fold.label] = ", ".join(_short(r) for r in (fit.ranked if how == "rank_average"
                                                                      else fit.members))
        results.append(HeldOutResult(how, DESCRIPTIONS[how], _summary(pair_ids, pairs, scores, comparisons, n_boot,
                                                                     seed), scores, choices))
    return fits, results


# --- transfer between persona families ---------------------------------------------------------------------
@dataclass(frozen=True)
class Transfer:
    """One strategy's setting chosen on one family's pairs and tested on another's."""

    strategy: str
    chosen_on: str
    tested_on: str
    chosen: Result | None
    train_accuracy: float
    test_accuracy: float
    primary_test_accuracy: float
    """The strategy's setting fixed in advance, on the same test pairs (for comparison)."""
    n_train: int
    n_test: int
    test_pairs: tuple[str, ...] = field(default=())


def family_pairs(pairs: PairModels, family: Mapping[str, str], name: str, pair_ids: Sequence[str]) -> tuple[str, ...]:
    """Pairs whose two models are both of family `name`."""
    return tuple(p for p in sorted(pair_ids) if family[pairs[p]["aligned"]] == name == family[pairs[p]["faker"]])


def transfer(ev: Evaluation, pairs: PairModels, family: Mapping[str, str], strategies: Sequence[str] | None = None) \
        -> list[Transfer]:
    """For each strategy and ordered pair of families (A, B): setting chosen on A's pairs, accuracy on B's."""
    pair_ids = sorted(ev.pair_prompts)
    names = sorted({family[pairs[p][k]] for p in pair_ids for k in ("aligned", "faker")})
    within = {n: family_pairs(pairs, family, n, pair_ids) for n in names}
    rows = []
    for strategy in strategies or ev.strategies():
        for a in names:
            for b in names:
                if a == b or not within[a] or not within[b]:
                    continue
                chosen = choose([View.of(r, within[a], pairs) for r in ev.find(strategy)])
                primary = View.of(ev.primary(strategy), within[b], pairs).accuracy()
                test = View.of(chosen.result, within[b], pairs).accuracy() if chosen else math.nan
                rows.append(Transfer(strategy, a, b, chosen.result if chosen else None,
                                     chosen.accuracy() if chosen else math.nan, test, primary, len(within[a]),
                                     len(within[b]), within[b]))
    return rows
