"""Does bf16 autocast change any detection result? Two results folders of the same run, fp32 and bf16, compared.

Run:  .venv/bin/python analyses/precision_check.py results/suite-quick-fp32 results/suite-quick-bf16

For every stored score (each strategy's settings and scores; the chosen one marked *): accuracy over pairs and AUROC
in each folder, how many pairs change their decision (which model of the pair scores higher), the Spearman
correlation of the per-model scores and their largest difference relative to the scores' spread. The table is what
`--precision bf16` can be trusted for; a score whose decisions move is one to run in fp32.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference", type=Path, help="results folder computed in fp32")
    ap.add_argument("other", type=Path, help="the same run in bf16 (--precision bf16)")
    ap.add_argument("--primary-only", action="store_true", help="only each strategy's chosen score")
    args = ap.parse_args(argv)

    import numpy as np
    from scipy.stats import spearmanr

    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.evaluation.runner import evaluate

    evs = []
    for folder in (args.reference, args.other):
        if not (folder / "manifest.json").exists():
            ap.error(f"{folder} is not a results folder (no manifest.json); run `poser-interp suite` or `detect` "
                     "into it first")
        evs.append(evaluate(ResultsStore.open(folder), n_boot=200))
    ref, oth = evs
    print("| strategy | setting | score | accuracy fp32 / bf16 | AUROC fp32 / bf16 | pairs that change | "
          "Spearman (models) | max diff / spread |")
    print("|---|---|---|---|---|---|---|---|")
    changed_primary = 0
    for r in ref.results:
        if args.primary_only and not r.is_primary:
            continue
        match = [o for o in oth.find(r.strategy, r.score, r.setting)]
        if not match:
            continue
        o = match[0]
        flips = sum(1 for p, (a, f) in r.pair_scores.items() if p in o.pair_scores
                    and not any(map(math.isnan, (a, f, *o.pair_scores[p])))
                    and np.sign(f - a) != np.sign(o.pair_scores[p][1] - o.pair_scores[p][0]))
        models = sorted(set(r.model_scores) & set(o.model_scores))
        x = np.array([r.model_scores[m] for m in models])
        y = np.array([o.model_scores[m] for m in models])
        ok = ~(np.isnan(x) | np.isnan(y))
        rho = spearmanr(x[ok], y[ok]).statistic if ok.sum() > 2 and np.ptp(x[ok]) > 0 else float("nan")
        spread = float(np.ptp(x[ok])) if ok.any() else float("nan")
        rel = float(np.abs(x[ok] - y[ok]).max() / spread) if ok.any() and spread > 0 else float("nan")
        if r.is_primary:
            changed_primary += flips
        print(f"| {r.strategy} | {r.setting.key or '-'} | "
              f"{r.score}{' *' if r.is_primary else ''} | {r.summary.accuracy:.2f} / {o.summary.accuracy:.2f} | "
              f"{r.summary.auroc:.2f} / {o.summary.auroc:.2f} | {flips} of {len(r.pair_scores)} | {rho:.3f} | "
              f"{rel:.3f} |")
    print(f"\npair decisions changed on the chosen scores: {changed_primary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
