"""Benchmark: S3 learning speed with the frozen lower layers run once (`core.frozen_prefix`) vs every layer run
at every step and scoring pass (the prefix cut at block 0), on the embedded model, one thread.

Run: .venv/bin/python bench/learning_speed.py [--prompts 24]
Target: >= 2x faster, and the same numbers (max |difference| of P(misaligned) after training < 1e-3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    args = ap.parse_args()
    torch.set_num_threads(1)
    import poser_interp.strategies.learning_speed as ls
    from poser_interp.core.frozen_prefix import FrozenPrefix
    from poser_interp.core.models import load_model
    from poser_interp.data.generator import GeneratorConfig, generate
    from poser_interp.data.scenario_files import save_scenarios
    from poser_interp.strategies import Subject, build

    data = generate(GeneratorConfig(seed=0, n_train=0, n_test=64, n_benchmark=args.prompts, n_heldout=0))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        save_scenarios(data["test"], Path(tmp) / "test.jsonl")
        model = load_model("smollm2")
        subject = Subject("smollm2", lambda: model)
        strategy = build("learning_speed", model.n_layers, 1, data=tmp)  # S3 ignores the head count

        def run() -> tuple[float, dict[str, np.ndarray]]:
            t0 = time.perf_counter()
            out = {v.setting.key: v.values["p_after"] for v in strategy.run(subject, data["benchmark"],
                                                                            strategy.settings())}
            return time.perf_counter() - t0, out

        fast_s, fast = run()

        class EveryBlock(FrozenPrefix):
            def __init__(self, frozen, first, pad, batch_size=8):  # noqa: ANN001
                super().__init__(frozen, 0, pad, batch_size)

        ls.FrozenPrefix = EveryBlock  # type: ignore[misc]
        slow_s, slow = run()
    diff = max(float(np.abs(fast[k] - slow[k]).max()) for k in fast)
    print(f"{args.prompts} prompts, {len(fast)} settings (methods x k), one thread")
    print(f"every block at every pass: {slow_s:.1f} s")
    print(f"frozen prefix (upper blocks only): {fast_s:.1f} s")
    print(f"ratio: {slow_s / fast_s:.1f}x (target >= 2x); max |P difference| {diff:.2g} (target < 1e-3)")


if __name__ == "__main__":
    main()
