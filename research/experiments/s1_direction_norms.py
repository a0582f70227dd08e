"""S1's direction norm per model, read from a results directory's stored rows (no model is loaded).

Run:  .venv/bin/python research/experiments/s1_direction_norms.py results/leads-v2b [--alpha 4] [--layers 16,22]

Every S1 row keeps the norm of the steering direction it used (`meta["direction_norm"]`); with
`steering.contrast=concept` that is the size of the lax-minus-competent oversight difference in the model's residual
stream. Prints, per layer, each model's norm, the pairs whose faker has the larger one, and the AUROC over models
(faker = positive), i.e. the norm read as a detector score.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a results directory with steering rows")
    ap.add_argument("--alpha", type=float, default=4.0, help="the alpha of the rows to read (the norm is the same "
                                                             "for every alpha of a layer)")
    ap.add_argument("--layers", default="16,22")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (models resampled)")
    args = ap.parse_args(argv)

    from poser_interp.evaluation.metrics import summarize
    from poser_interp.evaluation.results import ResultsStore
    from poser_interp.strategies.base import Setting

    store = ResultsStore.open(args.out)
    kinds = {m: e["kind"] for m, e in store.manifest["testbed"]["models"].items()}
    pairs = store.manifest["pairs"]
    print(f"{args.out}: contrast {store.manifest['config']['strategies']['steering'].get('contrast')}")
    for layer in (int(x) for x in args.layers.split(",")):
        key = Setting.of(layer=layer, alpha=args.alpha)
        norm = {m: store.get(m, "steering", key).values.meta["direction_norm"] for m in kinds
                if (m, "steering", key.key) in store}
        order = sorted(norm, key=lambda m: (kinds[m], m))
        print(f"L{layer}: " + ", ".join(f"{m} ({kinds[m]}) {norm[m]:.1f}" for m in order))
        ps = [p for p in pairs.values() if {p["faker"], p["aligned"]} <= set(norm)]
        s = summarize([f"{p['aligned']}__{p['faker']}" for p in ps], [norm[p["aligned"]] for p in ps],
                      [norm[p["faker"]] for p in ps], order, [norm[m] for m in order],
                      [kinds[m] == "faker" for m in order], seed=args.seed,
                      pair_models=[(p["aligned"], p["faker"]) for p in ps])
        print(f"  the norm as a score (larger = faker): accuracy {s.accuracy_text()} over {len(ps)} pairs, AUROC "
              f"{s.auroc_text()} over {len(order)} models")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
