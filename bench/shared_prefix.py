"""Benchmark: last-token reads on a shared prefix (`core/shared_prefix.py`) vs full forwards, on the embedded model,
one thread: S4's concept statements (every layer), a testbed's prompts (S1's direction read) and the same prompts'
answer logits on the plain Hugging Face model (what testbed builds, verify and the oversight stage score); also
checks they agree.

Run: .venv/bin/python bench/shared_prefix.py [--statements 504] [--prompts 64]
Target: >= 1.6x on the statements; relative residual difference < 1e-5 on both.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--statements", type=int, default=504, help="concept statements read (S4 reads all 504)")
    ap.add_argument("--prompts", type=int, default=64, help="generated prompts read")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from poser_interp.core.activations import collect, last_resid
    from poser_interp.core.models import load_hf, load_model
    from poser_interp.core.scoring import hf_score_prepared, prepare
    from poser_interp.core.tokens import PromptFormat, encode, pad_id
    from poser_interp.data.concepts import load_contrast_dir
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.strategies.probes import ProbesConfig

    model = load_model("smollm2")
    c = ProbesConfig.for_model(model.n_layers, 1)
    statements = [t for s in load_contrast_dir(None, c.concepts).values() for t in s.texts()][:args.statements]
    ids = [encode(model.tokenizer, t, PromptFormat()) for t in statements]
    prompts = [s.render() for s in generate(GeneratorConfig(seed=0, n_train=0, n_test=0, n_benchmark=args.prompts,
                                                            n_heldout=0))["benchmark"]]
    hf, tok = load_hf("smollm2")
    prep = prepare(tok, prompts, ("A", "B"), PromptFormat())
    rows = []
    for name, run in [("statements, 30 layers (S4)", lambda shared: collect(model, ids, c.layers, "last",
                                                                             c.batch_size, shared_prefix=shared)[0]),
                      ("prompts, 4 layers (S1 direction)", lambda shared: last_resid(model, prompts, [4, 10, 16, 22],
                                                                                      shared_prefix=shared)),
                      ("prompts, answer logits (HF: build, verify)",
                       lambda shared: hf_score_prepared(hf, prep, pad_id(tok), 16, shared_prefix=shared))]:
        t0 = time.perf_counter()
        full = run(False)
        t1 = time.perf_counter()
        fast = run(True)
        t2 = time.perf_counter()
        rows.append((name, t1 - t0, t2 - t1, float((fast - full).norm() / full.norm())))
    print(f"{len(ids)} statements, {len(prompts)} prompts, one thread")
    for name, full_s, fast_s, rel in rows:
        print(f"{name}: full forwards {full_s:.1f} s, shared prefix {fast_s:.1f} s, ratio {full_s / fast_s:.2f}x, "
              f"relative difference {rel:.1e}")
    print("targets: >= 1.6x on the statements; relative difference < 1e-5")


if __name__ == "__main__":
    main()
