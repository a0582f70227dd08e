"""Benchmark: S1's steered passes starting at the steered layer from the clean residual (`forward(start_at_layer)`)
vs the full forward with the steering hook, on the embedded model, one thread; also checks they agree.

Run: .venv/bin/python bench/steering.py [--prompts 16]
Target: >= 1.5x over S1's default layers (15/35/55/75% of the depth); max |logit difference| < 1e-3.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from poser_interp.core.forward import forward
    from poser_interp.core.hooks import add_vector, capture
    from poser_interp.core.models import load_model
    from poser_interp.core.scoring import prepare
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.strategies.steering import SteeringConfig

    model = load_model("smollm2")
    layers = SteeringConfig.for_model(model.n_layers, 1).layers
    prompts = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=args.prompts, n_heldout=0))["benchmark"]
    batches = list(prepare(model.tokenizer, prompts).batches(8, model.tokenizer.pad_token_id or 0))
    vec = torch.randn(model.d_model)
    resid: dict = {}
    for i, (_, batch) in enumerate(batches):
        forward(model, batch, [(model.hook_name(la), capture(resid, (i, la))) for la in layers])
    full_s = fast_s = diff = 0.0
    for layer in layers:
        hooks = [(model.hook_name(layer), add_vector(vec, 4.0))]
        for i, (_, batch) in enumerate(batches):
            t0 = time.perf_counter()
            full = forward(model, batch, hooks)[:, -1]
            t1 = time.perf_counter()
            fast = forward(model, batch, hooks, start_at_layer=layer, resid=resid[(i, layer)])[:, -1]
            t2 = time.perf_counter()
            full_s, fast_s = full_s + t1 - t0, fast_s + t2 - t1
            diff = max(diff, float((full - fast).abs().max()))
    print(f"{args.prompts} prompts x layers {layers}, one thread")
    print(f"full steered passes: {full_s:.1f} s; from the steered layer: {fast_s:.1f} s")
    print(f"ratio: {full_s / fast_s:.2f}x (target >= 1.5x); max |logit difference| {diff:.2g} (target < 1e-3)")


if __name__ == "__main__":
    main()
