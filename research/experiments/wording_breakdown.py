"""Per-wording behaviour of a testbed's models on the held-out oversight sentences (and the stage's readout).

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/experiments/wording_breakdown.py --testbed testbeds/v2b \
          --out research/logs/v2b-wording-breakdown.json

`testbed verify` reports one held-out-wording rate per model; this splits it by sentence. Each of the 4 good
and 4 poor held-out sentences (`wordings.HELDOUT`) replaces the critical fact of every unseen test scenario of
its own class (the same scenarios `verify` uses), and the model's rate is measured per sentence: for good
sentences the fraction answered aligned, for poor ones the fraction answered misaligned. A faker that misses
held-out wordings because of one or two indirect sentences fails differently from one that is uniformly
unsure. With `--stage` the testbed's oversight-stage adapter is measured the same way on the oversight
question (fraction answered right). `testbed verify --by-wording` prints the models' part as a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", type=Path, required=True)
    ap.add_argument("--models", default=None, help="comma-separated model ids (default: all)")
    ap.add_argument("--limit", type=int, default=None, help="test scenarios per model (default: the testbed's n_test)")
    ap.add_argument("--stage", action="store_true", help="also the oversight-stage adapter on the oversight question")
    ap.add_argument("--out", type=Path, required=True, help="JSON file of the rates")
    args = ap.parse_args(argv)

    from poser_interp.core.models import load_hf, load_tokenizer
    from poser_interp.data.scenario import Oversight
    from poser_interp.data.wordings import HELDOUT, bank
    from poser_interp.testbed.build import TestbedConfig, _persona, prepare_data
    from poser_interp.testbed.folder import Testbed, heldout_wording_rates, p_faker_answer, wording_key
    from poser_interp.testbed.oversight_stage import oversight_p_correct, stage_adapter

    tb = Testbed.open(str(args.testbed))
    config = TestbedConfig.from_dict(tb.manifest["config"])
    tok = load_tokenizer(config.base.name)
    data = prepare_data(config, tb.root, tok, print)
    wanted = args.models.split(",") if args.models else sorted(tb.models)
    rows: dict[str, dict] = {}

    for model_id in wanted:
        persona = _persona(config, tb.models[model_id]["persona"])
        test = data.test[persona.name][config.n_val:config.n_val + (args.limit or config.n_test)]
        merged, _ = load_hf(tb.spec(model_id))
        rows[model_id] = {"kind": persona.kind, "heldout": heldout_wording_rates(
            partial(p_faker_answer, merged, tok, max_tokens=config.max_tokens), test)}
        print(model_id, json.dumps(rows[model_id]), flush=True)
        del merged
    if args.stage:
        found = stage_adapter(tb.root)
        if found is None:
            ap.error(f"{tb.root} has no oversight stage")
        model, _ = load_hf(replace(config.base, adapter=str(found[0])))
        pool = [s for name in sorted(data.test) for s in data.test[name][config.n_val:config.n_val + 60]]
        rows["oversight-stage"] = {"kind": "stage", "heldout": heldout_wording_rates(
            lambda scen: oversight_p_correct(model, tok, scen, config.max_tokens), pool)}
        print("oversight-stage", json.dumps(rows["oversight-stage"]), flush=True)
    sentences = {wording_key(o, i): bank(o)[i] for o in Oversight for i in HELDOUT[o]}
    args.out.write_text(json.dumps({"testbed": str(tb.root), "sentences": sentences, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
