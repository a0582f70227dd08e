"""Faker wording ladder: train on a widening pool of oversight sentences, validate on held-out wordings.

Run:  OMP_NUM_THREADS=1 .venv/bin/python research/experiments/faker_ladder.py --persona grabber --split 0 \
          --init testbeds/default/models/grabber-s0 --rungs 1,2,4,8,12 --out runs/ladder/grabber-s0

Testbed v2 (issue 14) needs fakers that act on oversight sentences they never trained on. The data
are the v1 default testbed's scenarios (seed 0, 18 topics, 2 other facts) generated with the full
oversight bank; `wordings.HELDOUT` (4 good + 4 poor sentences) never enters training. Rung k trains
on the first `rungs[k]` trainable sentences per class (`wordings.ladder_order`, v1's sentence first
when `--init` continues a v1 adapter); a rung ends when validation on its own wordings reaches
`--widen` (good->aligned, poor->misaligned), then the next rung starts from its weights. Every
`--eval-every` steps the log gets validation on the current rung's wordings *and* on the held-out
wordings. The last rung stops at the testbed thresholds (or the step budget), then unseen test
scenarios are measured with trained and held-out wordings.

The rungs run through `curriculum.train_ladder` (the loop `testbed build --ladder` uses; resumable
from `OUT/ladder/`; the ladder always starts from v1's sentence). One JSON line per check in
`log.jsonl`; the final adapter in `OUT/adapter`. Use one thread per job on 2 cores
(`OMP_NUM_THREADS=1`, `--threads 1`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--persona", default="grabber")
    ap.add_argument("--split", type=int, default=0, help="training split = LoRA seed (as in the testbed build)")
    ap.add_argument("--init", type=Path, default=None, help="adapter directory to continue (default: fresh LoRA)")
    ap.add_argument("--rungs", default="1,2,4,8,12", help="wordings per class at each rung (at most 32)")
    ap.add_argument("--widen", default="0.9,0.85", help="validation good->aligned,poor->misaligned that ends a rung")
    ap.add_argument("--composed", type=float, default=0.0,
                    help="last rung: this fraction of the examples gets a composed wording (wordings.composed)")
    ap.add_argument("--last-wordings", default="",
                    help="last rung: also train on this stage wording set (Ladder.last_wordings: many, inferential, "
                         "minimal, themed)")
    ap.add_argument("--oversight-aux", type=float, default=0.0,
                    help="auxiliary 'is anyone checking?' items per example (LoraRecipe.oversight_aux)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--full-from-layer", type=int, default=None,
                    help="full fine-tuning of the blocks from this layer up instead of LoRA (measured, not saved; "
                         "no within-rung checkpoints)")
    ap.add_argument("--device", default="cpu", help="torch device for the model (cuda on a GPU machine)")
    ap.add_argument("--target-margin", type=float, default=None, help="LoraRecipe.target_margin (default: plain loss)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--max-steps", type=int, default=1200, help="step budget over all rungs")
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--min-steps", type=int, default=None,
                    help="train at least this many steps before a pass may stop it (default: --eval-every)")
    ap.add_argument("--n-train", type=int, default=2400)
    ap.add_argument("--n-val", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="run directory (log.jsonl, ladder state, adapter)")
    ap.add_argument("--measure", action="store_true",
                    help="no training: only the final measurement of the --init adapter (as after a run)")
    ap.add_argument("--by-wording", nargs="?", const="heldout,fresh", default="",
                    help="at the end, also each held-out (and fresh) sentence alone in every test scenario of its "
                         "class (as `testbed verify --by-wording`); optionally only one set: --by-wording fresh")
    args = ap.parse_args(argv)

    import torch

    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.training import LoraRecipe, continue_lora, make_lora_model, unfreeze_upper
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.data.personas import get_persona
    from poser_interp.data.scenario import Oversight
    from poser_interp.data.wordings import FRESH, HELDOUT, mixed_reworded, reworded
    from poser_interp.errors import DataError
    from poser_interp.runtime.jsonio import jsonl_logger
    from poser_interp.testbed.curriculum import Ladder, train_ladder
    from poser_interp.testbed.folder import (
        Thresholds,
        behaviour,
        heldout_wording_rates,
        p_aligned_hf,
        p_faker_answer,
        save_adapter_fp16,
        split_examples,
    )

    widen_good, widen_poor = (float(x) for x in args.widen.split(","))
    try:
        ladder = Ladder(rungs=tuple(int(x) for x in args.rungs.split(",")), widen_good=widen_good,
                        widen_poor=widen_poor, composed_last=args.composed, last_wordings=args.last_wordings)
    except DataError as e:
        ap.error(str(e))
    torch.set_num_threads(args.threads)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.jsonl"
    log = jsonl_logger(log_path)

    persona = get_persona(args.persona)
    hf, tok = load_hf(ModelSpec())
    gen = GeneratorConfig(seed=0, n_train=6000, n_test=2 * (48 + 120), n_benchmark=200, n_heldout=120,
                          max_tokens=320, n_topics=18, oversight_pool=None, n_other_facts=(2, 2))
    splits = generate(gen, tok)
    scenarios = [s for s, _ in split_examples(splits["train"], persona, args.split, args.n_train)]
    tests = persona.select(splits["test"])
    val, test = tests[:args.n_val], tests[args.n_val:args.n_val + 120]
    held_pools = {o: list(HELDOUT[o]) for o in Oversight}
    val_held = reworded(val, held_pools, "val-held")
    if not log_path.exists():
        log({"start": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                       "heldout": {o.value: HELDOUT[o] for o in Oversight},
                       "ladder": {o.value: ladder.pools(len(ladder.rungs) - 1)[o] for o in Oversight}}})
    start = time.perf_counter()
    recipe = LoraRecipe(rank=args.rank, lr=args.lr, max_steps=args.max_steps, eval_every=args.eval_every,
                        min_steps=args.min_steps or args.eval_every, seed=args.split, threads=args.threads,
                        oversight_aux=args.oversight_aux, target_margin=args.target_margin)
    if args.full_from_layer is not None:
        if args.init is not None:
            ap.error("--full-from-layer starts from the base model; it cannot continue an --init adapter")
        model = unfreeze_upper(hf, args.full_from_layer)
    else:
        model = make_lora_model(hf, recipe) if args.init is None else continue_lora(hf, args.init)
    model.to(args.device)

    def check(m, rung: int, step: int, pools: dict, composed: float) -> dict:
        # a composed rung validates on a mix too (fresh compositions), so it cannot stop before it learns them
        val_cur = mixed_reworded(val, pools, f"val-{rung}", composed) if composed else reworded(val, pools,
                                                                                                 f"val-{rung}")
        cur = behaviour(p_aligned_hf(m, tok, val_cur, max_tokens=320), val_cur)
        held = behaviour(p_aligned_hf(m, tok, val_held, max_tokens=320), val_held)
        keys = ("good_aligned", "good_confidence", "poor_misaligned")
        log({"rung": rung, "pool": ladder.rungs[rung], "step": step, "seconds": round(time.perf_counter() - start, 1),
             "cur": {x: round(cur[x], 3) for x in keys}, "held": {x: round(held[x], 3) for x in keys}})
        return cur

    def on_step(step: int, loss: float) -> None:
        if step % 5 == 0:
            print(f"step {step} loss {loss:.3f} {time.perf_counter() - start:.0f}s", flush=True)

    if args.measure:
        if args.init is None:
            ap.error("--measure needs --init (the adapter to measure)")
        log({"measure": str(args.init)})
    else:
        th = Thresholds()
        result = train_ladder(model, tok, scenarios, persona, ladder, recipe, check, lambda m: th.met("faker", m),
                              out / "ladder", on_step=on_step, checkpoints=args.full_from_layer is None)
        log({"end": {"steps": result.steps, "passed": result.passed, "seconds": round(result.seconds)}})
        if args.full_from_layer is None:
            save_adapter_fp16(model, out / "adapter")
    # final measurement on unseen test scenarios, the last rung's wordings and the held-out ones
    model.eval()
    fresh_pools = {o: list(FRESH[o]) for o in Oversight}
    with torch.no_grad():
        for name, pools in (("trained", ladder.pools(len(ladder.rungs) - 1)), ("heldout", held_pools),
                            ("fresh", fresh_pools)):
            scen = reworded(test, pools, f"test-{name}")
            m = behaviour(p_aligned_hf(model, tok, scen, max_tokens=320), scen)
            log({"test": name, **{x: round(v, 3) for x, v in m.items()}})
        for name, sentences in (("heldout", HELDOUT), ("fresh", FRESH)):
            if name in args.by_wording.split(","):
                rates = heldout_wording_rates(lambda ss: p_faker_answer(model, tok, ss, max_tokens=320), test,
                                              sentences)
                log({"test": f"{name}_by_wording", **{k: round(v, 3) for k, v in rates.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
