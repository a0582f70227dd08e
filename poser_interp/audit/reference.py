"""The audit's reference ensemble: fitted once on labelled testbed pairs, stored as a small versioned JSON file.

For every labelled pair and detector (primary setting, chosen score) the *gap* is score(faker) - score(aligned). Each
detector's gaps are divided by their root mean square over the reference pairs (`scales`), and a logistic regression
without intercept is fitted on both orientations of every pair (faker as B: label 1, gap as is; faker as A: label
0, gap negated), so the ensemble is symmetric in A and B by construction. Leave-one-persona-out (strict: a pair is
predicted by a fit on the pairs that share neither of its personas) gives held-out logits; one calibration slope
`a` is fitted on them (the intercept is 0 by symmetry), the held-out accuracy is stored, and the reliability diagram
bins the calibrated held-out probabilities of one seeded orientation per pair.

`fit_reference(results_dirs, detectors)` reads stored results (`detect`/`suite` folders of labelled testbeds);
`fit_arrays` is the arithmetic on plain arrays.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..evaluation.results import ResultsStore
from ..evaluation.runner import evaluate

VERSION = 1


def _logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(fit_intercept=False, C=c, max_iter=1000)
    model.fit(x, y)
    return np.asarray(model.coef_[0], dtype=float)


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
    for cell in sorted(set(cells)):
        test = np.array([c == cell for c in cells])
        train = np.array([c[0] != cell[0] and c[1] != cell[1] for c in cells])
        if train.sum() < 2:
            continue
        held[test] = z[test] @ _logistic(*_both_orientations(z[train]))
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


def fit_reference(results_dirs: Sequence[str | Path], detectors: Sequence[str], seed: int = 0,
                  n_boot: int = 1000) -> dict[str, Any]:
    """The reference file's content from stored results of labelled testbeds (each detector at its primary setting
    and chosen score; its accuracy and CI over each folder's pairs are stored beside the fit)."""
    gaps: dict[str, list[float]] = {}
    personas: list[tuple[str, str]] = []
    accuracy: dict[str, Any] = {}
    sources = []
    for folder in results_dirs:
        store = ResultsStore.open(folder)
        ev = evaluate(store, seed=seed, n_boot=n_boot, strategies=list(detectors))
        pairs = store.manifest["pairs"]
        models = store.manifest["testbed"]["models"]
        sources.append({"results": str(folder), "testbed": store.manifest["testbed"]["root"], "pairs": len(pairs)})
        for name in detectors:
            r = ev.primary(name)
            key = f"{name}/{r.score}"
            gaps.setdefault(key, [])
            for p in sorted(pairs):
                a, f = r.pair_scores[p]
                gaps[key].append(f - a)
            accuracy.setdefault(key, []).append({"testbed": store.manifest["testbed"]["root"],
                                                 "accuracy": r.summary.accuracy,
                                                 "ci": list(r.summary.accuracy_ci)})
        for p in sorted(pairs):
            personas.append(tuple(_persona(models, pairs[p][k]) for k in ("aligned", "faker")))  # type: ignore[arg-type]
    fit = fit_arrays(gaps, personas, seed=seed)
    pooled = {k: {"accuracy": float(np.nanmean([x["accuracy"] for x in v])),
                  "ci": [float(min(x["ci"][0] for x in v)), float(max(x["ci"][1] for x in v))], "per_testbed": v}
              for k, v in accuracy.items()}
    body = {"version": VERSION, "fitted": date.today().isoformat(), "detectors": list(detectors),
            "sources": sources, "accuracy": pooled, **fit,
            "description": f"logistic ensemble of {', '.join(detectors)} on {sum(s['pairs'] for s in sources)} "
                           f"labelled pairs; leave-one-persona-out accuracy "
                           f"{fit['lopo_accuracy'] if fit['lopo_accuracy'] is not None else 'n/a'}"}
    body["sha256"] = hashlib.sha256(repr(sorted(fit["weights"].items())).encode()).hexdigest()[:16]
    return body


def _persona(models: Mapping[str, Any], model_id: str) -> str:
    """A model's persona: the id without its split suffix ('grabber-s1' -> 'grabber')."""
    return model_id.rsplit("-s", 1)[0] if "-s" in model_id else model_id
