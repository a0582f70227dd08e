"""How large is a concept in each model's residual stream? Per model, layer and contrast set: the norm of the
mean last-token difference (suspicious side - benign side), the mean residual norm, and their ratio.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/experiments/concept_norms.py --testbed testbeds/v2c \
          [--layers 16,22] [--out results/concept-norms-v2c.json]

Why: S1's concept direction (oversight, lax - competent) at layer 22 is ~1.7x longer in v2c's fakers than in its
aligned models (stored `direction_norm`), so a faker is pushed harder by the same alpha. This asks whether that is
about oversight (other concepts, and `probes/controls/weather.jsonl`, a contrast with nothing to do with AI or
oversight, should then not differ) or about scale (the ratio to the mean residual norm removes it). The base model
(no adapter) is measured too, as the reference both kinds of model were trained from. Resumable: the JSON is
rewritten after each model and models already in it are skipped. Reads no benchmark prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def measure(model: object, sets: dict, layers: list[int], batch_size: int) -> dict:
    from poser_interp.core.activations import contrast_shift

    out = {}
    for name, s in sets.items():
        shift, scale = contrast_shift(model, s.negative, s.positive, layers, batch_size=batch_size)
        diff = shift.norm(dim=-1)
        out[name] = {str(la): {"diff": float(diff[i]), "resid": float(scale[i]), "ratio": float(diff[i] / scale[i])}
                     for i, la in enumerate(layers)}
    return out


def summary(res: dict, kinds: dict[str, str], pairs: dict[str, dict]) -> list[str]:
    from sklearn.metrics import roc_auc_score

    lines = []
    models = [m for m in res if m in kinds]
    base = res.get("base")
    for concept in next(iter(res.values())):
        for la in next(iter(res.values()))[concept]:
            for key in ("diff", "ratio"):
                v = {m: res[m][concept][la][key] for m in models}
                ok = [v[p["faker"]] > v[p["aligned"]] for p in pairs.values() if p["faker"] in v and p["aligned"] in v]
                fk = [v[m] for m in models if kinds[m] == "faker"]
                al = [v[m] for m in models if kinds[m] == "aligned"]
                if not (fk and al):
                    continue
                auroc = roc_auc_score([kinds[m] == "faker" for m in models], [v[m] for m in models])
                ref = f"{base[concept][la][key]:.3g}" if base else "-"
                lines.append(f"{concept:10s} L{la:>3s} {key:5s} fakers {min(fk):8.3g}-{max(fk):8.3g}  aligned "
                             f"{min(al):8.3g}-{max(al):8.3g}  base {ref:>8s}  pairs faker higher {sum(ok)}/{len(ok)}"
                             f"  model AUROC {auroc:.2f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", type=Path, required=True)
    ap.add_argument("--layers", default="16,22", help="comma-separated layers (block inputs, resid_pre)")
    ap.add_argument("--probes", type=Path, action="append", default=None,
                    help="contrast directories (default: probes/ and probes/controls/)")
    ap.add_argument("--concepts", default=None, help="comma-separated concepts (default: every one found)")
    ap.add_argument("--models", default=None, help="comma-separated model ids (default: every testbed model)")
    ap.add_argument("--adapter", type=Path, action="append", default=[],
                    help="also measure this adapter directory on the testbed's base (label: adapter:<path>), e.g. "
                         "a model trained on outside the testbed")
    ap.add_argument("--no-base", action="store_true", help="skip the base model")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON (default: results/concept-norms-<testbed>.json)")
    args = ap.parse_args(argv)

    import torch

    from poser_interp.core.models import load_model
    from poser_interp.data.concepts import load_contrast_dir
    from poser_interp.testbed.folder import Testbed

    torch.set_num_threads(args.threads)
    tb = Testbed.open(args.testbed)
    layers = [int(x) for x in args.layers.split(",")]
    sets = {}
    for d in args.probes or [REPO / "probes", REPO / "probes" / "controls"]:
        sets.update(load_contrast_dir(d))
    if args.concepts:
        wanted = args.concepts.split(",")
        missing = [c for c in wanted if c not in sets]
        if missing:
            raise SystemExit(f"unknown concept(s) {missing}; found: {sorted(sets)}")
        sets = {c: sets[c] for c in wanted}
    out = args.out or REPO / "results" / f"concept-norms-{tb.root.name}.json"
    res = json.loads(out.read_text())["models"] if out.exists() else {}
    models = args.models.split(",") if args.models else list(tb.models)
    extra = {f"adapter:{a}": a for a in args.adapter}
    todo = ([] if args.no_base else ["base"]) + models + list(extra)
    for m in todo:
        if m in res:
            continue
        t0 = time.perf_counter()
        if m == "base":
            model = load_model(tb.base_spec())
        elif m in extra:
            model = load_model(dataclasses.replace(tb.base_spec(), adapter=str(extra[m])))
        else:
            model = tb.load(m)
        res[m] = measure(model, sets, layers, args.batch_size)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"testbed": str(tb.root), "layers": layers, "concepts": sorted(sets),
                                   "sizes": {k: len(s.negative) + len(s.positive) for k, s in sets.items()},
                                   "models": res}, indent=1))
        print(f"{m}: {time.perf_counter() - t0:.0f} s", flush=True)
    kinds = {m: e["kind"] for m, e in tb.models.items()}
    for line in summary(res, kinds, tb.pairs):
        print(line)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
