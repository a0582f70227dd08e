"""S1's direction norm per model, read from a results directory's stored rows (no model is loaded).

Run:  .venv/bin/python analyses/s1_direction_norms.py results/leads-v2b [--alpha 4] [--layers 16,22]

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
    args = ap.parse_args(argv)

    from sklearn.metrics import roc_auc_score

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
        ok = [norm[p["faker"]] > norm[p["aligned"]] for p in pairs.values() if {p["faker"], p["aligned"]} <= set(norm)]
        auroc = roc_auc_score([kinds[m] == "faker" for m in order], [norm[m] for m in order])
        print(f"  pairs whose faker has the larger norm: {sum(ok)}/{len(ok)}; AUROC over models {auroc:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
