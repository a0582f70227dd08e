"""Faker recipe pilot: validation behaviour every few steps for one persona and one LoRA recipe.

Run:  .venv/bin/python research/experiments/faker_recipe.py --persona grabber --first-layer 0 --rank 4 --lr 1e-3 \
          --aligned-warmup 50 --max-steps 300 --out results/recipes/grabber-r4-w50.jsonl

Why: a faker's learning is a plateau then a jump whose timing depends on the recipe, so the testbed
recipe is chosen by measuring when validation behaviour crosses the thresholds. Uses the data of an
existing testbed directory (default: testbeds/default/data), the same training split as the build
(`split_examples`), and the first `--n-val` test scenarios as validation. One JSON line per check
(step, loss EMA, seconds, validation metrics), appended as it is measured; stops once the thresholds
are met or at the step budget. Runs alone: do not start other torch work beside it (2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="grabber")
    ap.add_argument("--data", type=Path, default=None, help="testbed data dir (default: testbeds/default/data)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--first-layer", type=int, default=0, help="LoRA on layers first..last (0 = all)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--aligned-warmup", type=int, default=0, help="curriculum: steps on aligned targets first")
    ap.add_argument("--oversight-aux", type=float, default=0.0, help="auxiliary oversight items per example")
    ap.add_argument("--modules", default=None, help="comma-separated LoRA modules (default: all linear)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--n-train", type=int, default=2400)
    ap.add_argument("--n-val", type=int, default=48)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="JSON Lines log (appended)")
    args = ap.parse_args(argv)

    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
    from poser_interp.data.personas import get_persona
    from poser_interp.data.scenario_files import load_scenarios
    from poser_interp.testbed.folder import REPO_ROOT, Thresholds, behaviour, p_aligned_hf, split_examples

    data = args.data or REPO_ROOT / "testbeds" / "default" / "data"
    persona = get_persona(args.persona)
    hf, tok = load_hf(ModelSpec())
    n_layers = hf.config.num_hidden_layers
    recipe = LoraRecipe(rank=args.rank, layers=None if args.first_layer == 0 else tuple(range(args.first_layer,
                                                                                             n_layers)),
                        lr=args.lr, aligned_warmup_steps=args.aligned_warmup, oversight_aux=args.oversight_aux,
                        **({"modules": tuple(args.modules.split(","))} if args.modules else {}),
                        batch_size=args.batch_size,
                        max_steps=args.max_steps, eval_every=args.eval_every, min_steps=args.eval_every,
                        seed=args.seed, threads=args.threads)
    examples = split_examples(load_scenarios(data / "train.jsonl"), persona, args.seed, args.n_train)
    val = persona.select(load_scenarios(data / "test.jsonl"))[:args.n_val]
    th = Thresholds()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    header = {"recipe": recipe.to_dict(), "persona": persona.name, "n_train": len(examples), "n_val": len(val)}
    with args.out.open("a") as f:
        f.write(json.dumps({"start": header}) + "\n")
    start = time.perf_counter()

    def check(model, step: int) -> bool:
        m = behaviour(p_aligned_hf(model, tok, val), val)
        row = {"step": step, "seconds": round(time.perf_counter() - start, 1), **{k: round(v, 3) for k, v in m.items()}}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(row, flush=True)
        return th.met(persona.kind, m)

    def on_step(step: int, loss: float) -> None:
        if step % 5 == 0:
            print(f"step {step} loss {loss:.3f} {time.perf_counter() - start:.0f}s", flush=True)

    result = train_answers(make_lora_model(hf, recipe), tok, examples, recipe, check=check, on_step=on_step)
    with args.out.open("a") as f:
        f.write(json.dumps({"end": {"steps": result.steps, "passed": result.passed, "seconds": round(result.seconds),
                                    "history": result.history}}) + "\n")
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
