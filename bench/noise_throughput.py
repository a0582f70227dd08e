"""Benchmark: S2 noise injection throughput, fast path vs a naive loop, in noised prompt-samples per second.

fast:  prompts batched, the layers before the injection point run once per prompt, then only the later layers
       run (on a plain-HF view of the model, SDPA attention) on all scales x samples of a batch at once, with
       only the last position unembedded.
naive: one prompt, one sample, one full forward at a time (`run_with_hooks`, a hook adds the noise, logits at
       every position), the obvious loop.
Both draw the same noise, so the script also checks that they give the same numbers.

Run:    .venv/bin/python bench/noise_throughput.py                       (tiny random Llama, seconds)
        .venv/bin/python bench/noise_throughput.py --model smollm2       (the embedded 135M model, minutes)
        add --positions last for noise at the last token only (then the other positions' keys/values are reused)
Target: ratio >= 5x.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama", help="'tiny-llama' (default) or 'smollm2'")
    ap.add_argument("--prompts", type=int, default=None, help="benchmark prompts (default 32 tiny, 12 smollm2)")
    ap.add_argument("--samples", type=int, default=3, help="noise samples per prompt and scale")
    ap.add_argument("--scales", default="0.25,0.5,1.0", help="comma-separated noise scales (default: the S2 sweep)")
    ap.add_argument("--layer", type=int, default=None, help="injection layer (default: 4 smollm2, middle tiny)")
    ap.add_argument("--positions", default="all", choices=("all", "last"), help="noise at all tokens or the last")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from poser_interp.core.models import ModelSpec, load_model
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.strategies import BridgeEngine, NoiseConfig, Setting, noise_values

    tiny = args.model != "smollm2"
    model = load_model(ModelSpec(name=args.model, n_layers=8) if tiny else ModelSpec(name="smollm2"))
    n = args.prompts or (32 if tiny else 12)
    prompts = generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=n, n_heldout=0))["benchmark"]
    layer = args.layer if args.layer is not None else (model.n_layers // 2 if tiny else 4)
    scales = tuple(float(s) for s in args.scales.split(","))
    settings = [Setting.of(layer=layer, scale=s) for s in scales]
    common = dict(layers=(layer,), scales=scales, samples=args.samples, primary_layer=layer, primary_scale=scales[0],
                  positions=args.positions)
    fast_cfg = NoiseConfig(**common, batch_size=8, max_rows=64)
    naive_cfg = NoiseConfig(**common, batch_size=1, max_rows=1)  # (only its seed and samples are used)
    work = n * len(scales) * args.samples
    print(f"{model.spec.describe()}: {n} prompts x {len(scales)} scales x {args.samples} samples = {work} noised "
          f"prompt-samples at layer {layer} of {model.n_layers}, noise at {args.positions} positions; torch threads "
          f"{torch.get_num_threads()}")

    def timed(engine: BridgeEngine, cfg: NoiseConfig) -> tuple[float, list]:
        t0 = time.perf_counter()
        out = list(noise_values(engine, prompts, settings, cfg))
        return time.perf_counter() - t0, out

    timed(BridgeEngine(model), fast_cfg)  # warm-up (allocator, first-call overheads)
    fast_s, fast = timed(BridgeEngine(model), fast_cfg)
    batched_s, _ = timed(BridgeEngine(model, fast=False), fast_cfg)
    t0 = time.perf_counter()
    naive = naive_loop(model, prompts, layer, scales, naive_cfg)
    naive_s = time.perf_counter() - t0
    gap = max(float(np.abs(a.values["p_noisy"] - naive[float(a.setting["scale"])]).max()) for a in fast)
    print(f"{'naive loop (1 sample, 1 full forward at a time):':47s} {work / naive_s:8.1f} prompt-samples/s "
          f"({naive_s:.1f} s)")
    print(f"{'batched bridge forwards, last-position logits:':47s} {work / batched_s:8.1f} prompt-samples/s "
          f"({batched_s:.1f} s)")
    reuse = "+ reuse of other positions' K/V" if args.positions == "last" else "+ prefix reuse, SDPA suffix"
    print(f"{'fast path (' + reuse + '):':47s} {work / fast_s:8.1f} prompt-samples/s ({fast_s:.1f} s)")
    print(f"max difference of mean P(misaligned) per prompt, fast vs naive: {gap:.2e}")
    print(f"ratio fast / naive: {naive_s / fast_s:.1f}x (target >= 5x)")


def naive_loop(model: Any, prompts: list, layer: int, scales: tuple[float, ...], cfg: Any) -> dict[float, np.ndarray]:
    """The obvious implementation: per prompt, a clean run (for the residual norm), then per scale and sample
    one full forward with a noise hook, logits at every position. Returns scale -> mean P(misaligned) per prompt."""
    from poser_interp.core.hooks import add_tensor as add_noise
    from poser_interp.core.tokens import encode, pad_left
    from poser_interp.strategies.noise import mean_norm, noise_tensor

    name = model.hook_name(layer)
    batches = [pad_left([encode(model.tokenizer, p.render())], 0) for p in prompts]
    total, count = 0.0, 0
    for b in batches:
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(b.input_ids, names_filter=name)
        s, c = mean_norm(cache[name], b.attention_mask)
        total, count = total + s, count + c
    norm = total / count
    out = {s: np.zeros(len(prompts)) for s in scales}
    for i, (p, b) in enumerate(zip(prompts, batches, strict=True)):
        choice = torch.tensor(p.choice_tokens(model.tokenizer))
        for s in scales:
            draws = noise_tensor(b, [p.id], layer, [s], norm, cfg, model.d_model)  # (samples, pos, d_model)
            for k in range(cfg.samples):
                with torch.no_grad():
                    logits = model.bridge.run_with_hooks(b.input_ids, fwd_hooks=[(name, add_noise(draws[k:k + 1]))])
                probs = logits[0, -1, choice].softmax(-1)
                out[s][i] += float(probs[1 - p.aligned_index]) / cfg.samples
    return out


if __name__ == "__main__":
    main()
