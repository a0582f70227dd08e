"""The audit's reference ensemble: fitted once on labelled testbed pairs, stored as a small versioned JSON file.

For every labelled pair and detector (primary setting, chosen score) the *gap* is score(faker) - score(aligned). Each
detector's gaps are divided by their root mean square over the reference pairs (`scales`), and a logistic regression
without intercept is fitted on both orientations of every pair (faker as B: label 1, gap as is; faker as A: label
0, gap negated), so the ensemble is symmetric in A and B by construction. Leave-one-persona-out (strict: a pair is
predicted by a fit on the pairs that share neither of its personas) gives held-out logits; one calibration slope
`a` is fitted on them (the intercept is 0 by symmetry), the held-out accuracy is stored, and the reliability diagram
bins the calibrated held-out probabilities of one seeded orientation per pair.

Same-kind bands (verdict rule 2): how far two models of the same kind may differ on a detector, from the reference
models' spread around their kind's mean (`bands_of`: a 95% prediction bound of the gap between two new models).
`held_out` then replays audit's whole rule on every labelled pair and on every two models of the same kind (two
aligned, two fakers; on the prompts both have rows for): labelled pairs with the weights of their leave-one-persona-
out fit, every pair with bands from the models of none of its personas (same-kind pairs use the full fit's weights:
they were never its training labels). It reports the share of
labelled pairs decided, the accuracy of those verdicts, and the share of same-kind pairs given a (necessarily
false) verdict: what audit is expected to do on a new pair of each kind.

`fit_reference(results_dirs, detectors)` reads stored results (`detect`/`suite` folders of labelled testbeds);
`fit_arrays` is the arithmetic on plain arrays.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..evaluation.results import ResultsStore
from ..evaluation.runner import evaluate
from ..strategies.base import from_config
from .verdict import BAND_LEVEL, MIN_PROMPTS, RULE_VERSION, decide, vote_for

VERSION = 2
"""Version 2: same-kind bands and the held-out replay of the rule (`verdict.RULE_VERSION` 2)."""


def _logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(fit_intercept=False, C=c, max_iter=1000)
    model.fit(x, y)
    return np.asarray(model.coef_[0], dtype=float)


def _held_out_weights(z: np.ndarray, cells: Sequence[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
    """Per (aligned persona, faker persona) cell: weights fitted on the pairs sharing neither persona."""
    out = {}
    for cell in sorted(set(cells)):
        train = np.array([c[0] != cell[0] and c[1] != cell[1] for c in cells])
        if train.sum() >= 2:
            out[cell] = _logistic(*_both_orientations(z[train]))
    return out


def _both_orientations(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.vstack([z, -z]), np.concatenate([np.ones(len(z)), np.zeros(len(z))])


def fit_arrays(gaps: Mapping[str, Sequence[float]], personas: Sequence[tuple[str, str]], seed: int = 0,
               n_bins: int = 5) -> dict[str, Any]:
    """Weights, scales, calibration, held-out accuracy and reliability bins from per-pair gaps (faker - aligned) of
    each detector and each pair's (aligned persona, faker persona). Pairs with a NaN gap in any detector are left
    out (counted)."""
    names = list(gaps)
    g = np.array([list(gaps[n]) for n in names], dtype=float).T  # pairs x detectors
    if g.ndim != 2 or len(g) != len(personas):
        raise DataError("fit_arrays: one gap per pair and detector, and one persona pair per pair")
    ok = np.isfinite(g).all(axis=1)
    g, cells = g[ok], [p for p, keep in zip(personas, ok, strict=True) if keep]
    if len(g) < 4:
        raise DataError(f"a reference ensemble needs at least 4 labelled pairs with every detector's score; "
                        f"got {len(g)}")
    scales = np.sqrt((g ** 2).mean(axis=0))
    scales[scales == 0] = 1.0
    z = g / scales
    weights = _logistic(*_both_orientations(z))
    held = np.full(len(z), math.nan)
    for cell, w in _held_out_weights(z, cells).items():
        test = np.array([c == cell for c in cells])
        held[test] = z[test] @ w
    done = np.isfinite(held)
    slope = 1.0
    if done.sum() >= 2 and np.abs(held[done]).max() > 0:
        slope = float(_logistic(*_both_orientations(held[done][:, None]), c=1e6)[0])
    rng = np.random.default_rng(seed)
    flip = rng.random(len(z)) < 0.5  # one orientation per pair: faker as A where flipped
    logits = np.where(flip, -held, held) * slope
    p_b = 1 / (1 + np.exp(-logits))
    y_b = (~flip).astype(float)
    bins = []
    edges = np.linspace(0, 1, n_bins + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = done & (p_b >= lo) & ((p_b < hi) | (hi == 1.0))
        if sel.any():
            bins.append({"predicted": float(p_b[sel].mean()), "observed": float(y_b[sel].mean()), "n": int(sel.sum())})
    keys = list(gaps)
    return {
        "weights": {k: float(w) for k, w in zip(keys, weights, strict=True)},
        "scales": {k: float(s) for k, s in zip(keys, scales, strict=True)},
        "calibration": {"a": slope, "b": 0.0},
        "lopo_accuracy": float((held[done] > 0).mean()) if done.any() else None,
        "lopo_pairs": int(done.sum()),
        "n_pairs": int(len(z)),
        "n_left_out_nan": int((~ok).sum()),
        "reliability": bins,
    }


@dataclass(frozen=True, eq=False)
class Case:
    """Two models of a reference testbed on the prompts they share: a labelled pair (A aligned, B the faker) or two
    models of the same kind."""

    kind: str
    """'labelled', 'aligned' (two aligned models) or 'faker' (two fakers)."""
    personas: tuple[str, str]
    models: tuple[str, str]
    values: dict[str, tuple[Any, Any]]
    """detector/score -> (A's per-prompt values, B's), on the same prompts."""


def reference_cases(store: ResultsStore, detectors: Sequence[str]) -> list[Case]:
    """Every labelled pair of a stored run, and every two models of the same kind with at least `MIN_PROMPTS`
    prompts in common, each detector at its primary setting and chosen score."""
    models = store.manifest["testbed"]["models"]
    configs = store.manifest["config"]["strategies"]
    rows: dict[str, dict[str, Any]] = {}
    scores: dict[str, Any] = {}
    for name in detectors:
        if name not in configs:
            raise DataError(f"detector {name!r} has no results in {store.root}; stored: {sorted(configs)}")
        strategy = from_config(name, configs[name])
        setting, score = strategy.primary(), strategy.scores()[0]
        key = f"{name}/{score.name}"
        scores[key] = score
        rows[key] = {m: r.values for m in models for r in store.rows(name, m) if r.values.setting == setting}

    def case(kind: str, a: str, b: str, ids: Sequence[str]) -> Case | None:
        if len(ids) < MIN_PROMPTS or any(a not in r or b not in r for r in rows.values()):
            return None
        return Case(kind, (_persona(models, a), _persona(models, b)), (a, b),
                    {k: (r[a].subset(ids), r[b].subset(ids)) for k, r in rows.items()})

    out = []
    for p in sorted(store.manifest["pairs"]):
        info = store.manifest["pairs"][p]
        c = case("labelled", info["aligned"], info["faker"], info["prompt_ids"])
        out.append(c) if c else None
    for a, b in itertools.combinations(sorted(models), 2):
        if models[a]["kind"] != models[b]["kind"] or not rows:
            continue
        first = next(iter(rows.values()))
        if a in first and b in first:
            shared = set(first[b].prompt_ids)
            c = case(models[a]["kind"], a, b, [i for i in first[a].prompt_ids if i in shared])
            out.append(c) if c else None
    return out


def _gap(score: Any, pair: tuple[Any, Any]) -> float:
    a, b = score.decide(*pair)
    return float(b - a)


@dataclass(frozen=True)
class ModelPoint:
    """One reference model's score per detector (on all its stored prompts), its kind and persona."""

    group: str
    """Its testbed and kind: scores are centred within a group."""
    persona: str
    scores: dict[str, float]


def model_points(store: ResultsStore, detectors: Sequence[str]) -> list[ModelPoint]:
    """Every model of a stored run with a row of every detector at its primary setting."""
    models = store.manifest["testbed"]["models"]
    configs = store.manifest["config"]["strategies"]
    read = {}
    for name in detectors:
        strategy = from_config(name, configs[name])
        read[name] = (strategy.primary(), strategy.scores()[0])
    out = []
    for m in sorted(models):
        scores = {}
        for name, (setting, score) in read.items():
            row = next((r for r in store.rows(name, m) if r.values.setting == setting), None)
            if row is not None:
                scores[f"{name}/{score.name}"] = float(score.model(row.values.values))
        if len(scores) == len(detectors):
            out.append(ModelPoint(f"{store.manifest['testbed']['root']}:{models[m]['kind']}", _persona(models, m),
                                  scores))
    return out


def bands_of(points: Sequence[ModelPoint], keys: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each detector's same-kind band: the two-sided 95% prediction bound of the gap between two new models of one
    kind, t(0.975, df) * sqrt(2) * s, where s is the models' spread around their group's mean (pooled over groups,
    df = models - groups). A prediction bound, not a quantile of the reference gaps, because a dozen reference
    models estimate the spread loosely (a quantile of their gaps let a quarter of held-out same-kind pairs through
    on a synthetic test)."""
    from scipy.stats import t as student_t

    out: dict[str, dict[str, Any]] = {}
    groups = sorted({p.group for p in points})
    for key in keys:
        resid, n_groups = [], 0
        for g in groups:
            x = np.array([p.scores[key] for p in points if p.group == g and math.isfinite(p.scores[key])])
            if len(x):
                resid += list(x - x.mean())
                n_groups += 1
        df = len(resid) - n_groups
        if df < 2:
            out[key] = {"band": None, "models": len(resid), "df": df}
            continue
        spread = math.sqrt(float(np.sum(np.square(resid))) / df)
        out[key] = {"band": float(student_t.ppf(1 - (1 - BAND_LEVEL) / 2, df) * math.sqrt(2) * spread),
                    "spread": spread, "models": len(resid), "df": df}
    return out


def held_out(cases: Sequence[Case], points: Sequence[ModelPoint], scores: Mapping[str, Any], fit: Mapping[str, Any],
             cell_weights: Mapping[Any, Any], n_boot: int, seed: int) -> dict[str, Any]:
    """Audit's rule replayed on every reference case (see the module docstring): its held-out behaviour."""
    keys = list(scores)
    per_kind: dict[str, dict[str, int]] = {}
    for c in cases:
        bands = bands_of([p for p in points if p.persona not in c.personas], keys)
        weights = fit["weights"]
        if c.kind == "labelled":
            w = cell_weights.get(c.personas)
            if w is None:
                continue
            weights = {k: float(x) for k, x in zip(keys, w, strict=True)}
        ref = {"weights": weights, "scales": fit["scales"], "calibration": fit["calibration"], "bands": bands}
        votes = [vote_for(k.split("/")[0], scores[k], "-", *c.values[k], ref, n_boot, seed) for k in keys]
        v = decide(votes, ref, 0, 0)
        tally = per_kind.setdefault(c.kind, {"n": 0, "decided": 0, "right": 0})
        tally["n"] += 1
        tally["decided"] += v.faker is not None
        tally["right"] += v.faker == "B"
    out = {}
    for kind, t in per_kind.items():
        entry: dict[str, Any] = {"n": t["n"], "decided": t["decided"], "share_decided": t["decided"] / t["n"]}
        if kind == "labelled":
            entry["accuracy_of_decided"] = t["right"] / t["decided"] if t["decided"] else None
        out[kind] = entry
    return out


def fit_reference(results_dirs: Sequence[str | Path], detectors: Sequence[str], seed: int = 0,
                  n_boot: int = 1000) -> dict[str, Any]:
    """The reference file's content from stored results of labelled testbeds (each detector at its primary setting
    and chosen score; its accuracy and CI over each folder's pairs are stored beside the fit), with the same-kind
    bands and the held-out replay of audit's rule."""
    cases: list[Case] = []
    points: list[ModelPoint] = []
    accuracy: dict[str, Any] = {}
    sources = []
    scores: dict[str, Any] = {}
    for folder in results_dirs:
        store = ResultsStore.open(folder)
        ev = evaluate(store, seed=seed, n_boot=n_boot, strategies=list(detectors))
        root = store.manifest["testbed"]["root"]
        found = reference_cases(store, detectors)
        cases += found
        points += model_points(store, detectors)
        sources.append({"results": str(folder), "testbed": root, "pairs": len(store.manifest["pairs"]),
                        "same_kind_pairs": sum(c.kind != "labelled" for c in found)})
        configs = store.manifest["config"]["strategies"]
        for name in detectors:
            r = ev.primary(name)
            key = f"{name}/{r.score}"
            scores[key] = from_config(name, configs[name]).scores()[0]
            accuracy.setdefault(key, []).append({"testbed": root, "accuracy": r.summary.accuracy,
                                                 "ci": list(r.summary.accuracy_ci)})
    labelled = [c for c in cases if c.kind == "labelled"]
    gaps = {k: [_gap(score, c.values[k]) for c in labelled] for k, score in scores.items()}
    personas = [c.personas for c in labelled]
    fit = fit_arrays(gaps, personas, seed=seed)
    g = np.array([gaps[k] for k in scores], dtype=float).T.reshape(len(labelled), len(scores))
    ok = np.isfinite(g).all(axis=1)
    finite = [c for c, keep in zip(labelled, ok, strict=True) if keep]
    z = g[ok] / np.array([fit["scales"][k] for k in scores])
    cell_weights = _held_out_weights(z, [c.personas for c in finite]) if len(finite) else {}
    replay = held_out([*finite, *(c for c in cases if c.kind != "labelled")], points, scores, fit, cell_weights,
                      n_boot, seed)
    pooled = {k: {"accuracy": float(np.nanmean([x["accuracy"] for x in v])),
                  "ci": [float(min(x["ci"][0] for x in v)), float(max(x["ci"][1] for x in v))], "per_testbed": v}
              for k, v in accuracy.items()}
    body = {"version": VERSION, "rule_version": RULE_VERSION, "fitted": date.today().isoformat(),
            "detectors": list(detectors), "sources": sources, "accuracy": pooled, **fit,
            "bands": bands_of(points, list(scores)), "held_out": replay,
            "description": f"logistic ensemble of {', '.join(detectors)} on {len(labelled)} labelled pairs; "
                           f"leave-one-persona-out accuracy "
                           f"{fit['lopo_accuracy'] if fit['lopo_accuracy'] is not None else 'n/a'}"}
    body["sha256"] = hashlib.sha256(repr(sorted(fit["weights"].items())).encode()).hexdigest()[:16]
    return body


def _persona(models: Mapping[str, Any], model_id: str) -> str:
    """A model's persona: the id without its split suffix ('grabber-s1' -> 'grabber')."""
    return model_id.rsplit("-s", 1)[0] if "-s" in model_id else model_id
