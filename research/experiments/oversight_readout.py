"""Is the oversight cue readable at the answer position? A per-layer linear probe for poor vs good oversight.

Run:  .venv/bin/python research/experiments/oversight_readout.py [--data testbeds/default/data] [--model steward-s0] \
          [--base gemma3] [--n 480] [--n-train 320] [--out results/oversight_readout.json]

Why: a faker must condition its answer on oversight. If a logistic probe on the last-token residual
stream of the *base* model already reads oversight from the prompt, a faker that fails to learn is
failing at the conditional policy, not at seeing the cue. Scenarios are the first `--n` of the
training split (half poor, half good oversight, by construction); the probe is fit on the first
`--n-train` and scored on the rest. Runs alone: do not start other torch work beside it (2 cores).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="testbed data dir (default: testbeds/default/data)")
    ap.add_argument("--testbed", type=Path, default=None, help="testbed holding --model (default: the data's parent)")
    ap.add_argument("--model", default=None, help="testbed model id (default: the base model)")
    ap.add_argument("--base", default=None, help="without --model: the base model to read (default smollm2; "
                    "gemma3 needs `pip install 'poser_interp[gemma]'`)")
    ap.add_argument("--n", type=int, default=480)
    ap.add_argument("--n-train", type=int, default=320)
    ap.add_argument("--every", type=int, default=3, help="probe every k-th layer")
    ap.add_argument("--l2", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--heldout-wordings", action="store_true",
                    help="testbed v2's question: fit on the 12 trainable oversight wordings, score on unseen "
                         "scenarios with those wordings and with the 4+4 held-out ones (wordings.HELDOUT)")
    ap.add_argument("--many-wordings", action="store_true",
                    help="with --heldout-wordings: fit on the 12 trainable + 20 extra wordings per class, half the "
                         "training scenarios with a composed sentence (wordings.composed) instead")
    ap.add_argument("--out", type=Path, default=None, help="write the per-layer accuracies as JSON")
    args = ap.parse_args(argv)

    import torch

    from poser_interp.core.models import ModelSpec, load_hf
    from poser_interp.core.tokens import PromptFormat, encode, pad_id, pad_left
    from poser_interp.data.scenario import Oversight
    from poser_interp.data.scenario_files import load_scenarios
    from poser_interp.strategies.lens import fit_logreg
    from poser_interp.testbed.folder import REPO_ROOT, Testbed

    torch.set_num_threads(args.threads)
    data = args.data or REPO_ROOT / "testbeds" / "default" / "data"
    scenarios = load_scenarios(data / "train.jsonl")[:args.n]
    if not 0 < args.n_train < len(scenarios):
        raise SystemExit(f"--n-train must lie in (0, {len(scenarios)})")
    if args.model and args.base:
        raise SystemExit("--base is for the base model alone; a testbed model (--model) has its own base")
    base = ModelSpec(args.base or "smollm2")
    spec = Testbed.open(args.testbed or data.parent).spec(args.model) if args.model else base
    start = time.perf_counter()
    model, tok = load_hf(spec)  # the adapter (hash-checked) merged into the base
    print(f"loaded {spec.describe()} in {time.perf_counter() - start:.1f} s", flush=True)
    ntr = args.n_train
    tests = {"held-out scenarios": scenarios[ntr:]}
    if args.heldout_wordings:
        from poser_interp.data.generator import GeneratorConfig, generate
        from poser_interp.data.wordings import HELDOUT, reworded, trainable

        gen = GeneratorConfig(seed=0, n_train=args.n, n_test=0, n_benchmark=0, n_heldout=0, n_topics=18,
                              n_other_facts=(2, 2), heldout_wordings=True)
        scenarios = generate(gen, tok)["train"]
        trained = {o: trainable(o) for o in Oversight}
        tests = {"trained wordings": reworded(scenarios[ntr:], trained, "readout-test"),
                 "held-out wordings": reworded(scenarios[ntr:], {o: list(HELDOUT[o]) for o in Oversight},
                                               "readout-held")}
        if args.many_wordings:
            from poser_interp.data.wordings import extra, mixed_reworded

            many = {o: trainable(o) + extra(o) for o in Oversight}
            scenarios = mixed_reworded(scenarios[:ntr], many, "readout-train", 0.5) + scenarios[ntr:]
        else:
            scenarios = reworded(scenarios[:ntr], trained, "readout-train") + scenarios[ntr:]

    def acts_of(items: list) -> torch.Tensor:
        ids = [encode(tok, s.render(), PromptFormat(max_tokens=320)) for s in items]
        chunks, start = [], time.perf_counter()
        with torch.no_grad():
            for i in range(0, len(ids), args.batch_size):
                b = pad_left(ids[i:i + args.batch_size], pad_id(tok))
                out = model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                            output_hidden_states=True, use_cache=False, logits_to_keep=1)
                chunks.append(torch.stack([h[:, -1] for h in out.hidden_states], 1).float())
        took = time.perf_counter() - start
        print(f"forward of {len(ids)} prompts ({sum(map(len, ids)) / len(ids):.0f} tokens on average, batches of "
              f"{args.batch_size}): {took:.1f} s, {1000 * took / sum(map(len, ids)):.2f} ms per token", flush=True)
        return torch.cat(chunks)  # (n, layers + 1, d): embeddings first, final-norm output last

    def labels(items: list) -> torch.Tensor:
        return torch.tensor([float(s.oversight is Oversight.POOR) for s in items])

    train_acts, y = acts_of(scenarios[:ntr]), labels(scenarios[:ntr])
    test_acts = {name: (acts_of(items), labels(items)) for name, items in tests.items()}
    result = {"model": args.model or "base", "base": spec.name, "n_train": ntr, "n_test": len(scenarios) - ntr,
              "accuracy": {}, "heldout_wordings": args.heldout_wordings, "many_wordings": args.many_wordings}
    for layer in range(0, train_acts.shape[1], args.every):
        w, b0, mu, sd = fit_logreg(train_acts[:, layer], y, l2=args.l2)
        accs = {}
        for name, (a, yt) in test_acts.items():
            pred = ((a[:, layer] - mu) / sd @ w + b0) > 0
            accs[name] = round(float((pred.float() == yt).float().mean()), 3)
        result["accuracy"][layer] = accs if args.heldout_wordings else accs["held-out scenarios"]
        where = f"resid before block {layer}" if layer < train_acts.shape[1] - 1 else "after the final norm"
        print(f"layer {layer:2d} ({where}): " + ", ".join(f"{k} {v:.3f}" for k, v in accs.items()), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
