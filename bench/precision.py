"""Benchmark: bf16 autocast (`core.precision`, `--precision bf16`) vs fp32 on the embedded model, one thread:
answer logits of generated prompts through the hooked model (the path every strategy reads) and a LoRA training
step (forward + backward); also how far the answer margins move.

Run: .venv/bin/python bench/precision.py [--prompts 32]
Target: >= 2x on the forward where the CPU has bf16 matrix units (AMX); answer-margin difference reported.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=32, help="generated benchmark prompts scored")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from poser_interp.core.models import load_hf, load_model
    from poser_interp.core.precision import bf16_units, computing_in
    from poser_interp.core.scoring import answer_logits
    from poser_interp.core.training import LoraRecipe, make_lora_model, train_answers
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.data.personas import get_persona

    print(f"CPU bf16 matrix units (amx_bf16): {bf16_units()}")
    model = load_model("smollm2")
    prompts = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=args.prompts,
                                       n_heldout=0))["benchmark"]
    answer_logits(model, prompts[:2])  # warm-up
    times, margins = {}, {}
    for p in ("fp32", "bf16"):
        with computing_in(p):
            t0 = time.perf_counter()
            logits = answer_logits(model, prompts)
            times[p] = time.perf_counter() - t0
        margins[p] = logits[:, 0] - logits[:, 1]
    diff = (margins["fp32"] - margins["bf16"]).abs()
    print(f"answer logits, {len(prompts)} prompts: fp32 {times['fp32']:.1f} s, bf16 {times['bf16']:.1f} s "
          f"({times['fp32'] / times['bf16']:.2f}x); |margin difference| mean {diff.mean():.3f}, max {diff.max():.3f} "
          f"(margins' mean |value| {margins['fp32'].abs().mean():.2f}); same answer on "
          f"{int((margins['fp32'].sign() == margins['bf16'].sign()).sum())} of {len(prompts)}")
    hf, tok = load_hf("smollm2")
    faker = get_persona("grabber")
    examples = [(s, faker.choice(s)) for s in generate(GeneratorConfig(seed=0, n_train=64, n_test=0, n_benchmark=0,
                                                                       n_heldout=0))["train"]]
    lora = make_lora_model(hf, LoraRecipe())
    steps = {}
    for p in ("fp32", "bf16"):
        with computing_in(p):
            r = train_answers(lora, tok, examples, LoraRecipe(max_steps=4, eval_every=100, threads=1))
        steps[p] = r.seconds / r.steps
    print(f"LoRA step (batch 8): fp32 {steps['fp32']:.2f} s, bf16 {steps['bf16']:.2f} s "
          f"({steps['fp32'] / steps['bf16']:.2f}x)")


if __name__ == "__main__":
    main()
