"""The suite's headline as a Markdown table (for the README): each strategy's chosen score, the held-out choices
and both baselines, on all prompts and on confidence-matched prompts, from a results folder (nothing computed).

Run:  .venv/bin/python analyses/suite_table.py --testbed testbeds/v2b --out results/suite-v2b16
"""

from __future__ import annotations

import argparse
import sys

from poser_interp.strategies.registry import baseline_names
from poser_interp.suite import SuiteConfig, run_suite
from poser_interp.testbed.folder import Testbed

LABEL = {"attention": "S6 attention", "noise": "S2 noise", "learning_speed": "S3 learning speed",
         "probes": "S4 suspicion probes", "lens": "S5 decision layer", "steering": "S1 steering",
         "blackbox": "black box", "random": "random coin"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbed", default="default")
    ap.add_argument("--out", required=True, help="results folder of `poser-interp suite` (read only)")
    ap.add_argument("--match-confidence", type=float, default=1.0)
    args = ap.parse_args(argv)
    tb = Testbed.open(args.testbed)
    suite = run_suite(tb, args.out, SuiteConfig(match_confidence=args.match_confidence), compute=False,
                      log=lambda _: None)
    ev, matched = suite.ev, suite.matched
    print(f"| {len(ev.pair_prompts)} pairs of {tb.root} | score (setting) | accuracy (95% CI) | AUROC (95% CI) | "
          f"confidence-matched (within {args.match_confidence:g} logit) accuracy / AUROC |")
    print("|---|---|---|---|---|")
    base = baseline_names()
    names = [n for n in ev.strategies() if n not in base] + [n for n in ev.strategies() if n in base]
    for name in names:
        r = ev.primary(name)
        m = matched.primary(name).summary if matched is not None else None
        setting = r.setting.key or "-"
        print(f"| {LABEL.get(name, name)} | {r.score} ({setting}) | {r.summary.accuracy_text()} | "
              f"{r.summary.auroc_text()} | " + (f"{m.accuracy:.2f} / {m.auroc:.2f}" if m else "-") + " |")
    for r in ev.find("blackbox", "neg_margin"):  # the second black-box rule beside the chosen one
        m = matched.find("blackbox", "neg_margin")[0].summary if matched is not None else None
        print(f"| black box | neg_margin (-) | {r.summary.accuracy_text()} | {r.summary.auroc_text()} | "
              + (f"{m.accuracy:.2f} / {m.auroc:.2f}" if m else "-") + " |")
    held_m = {h.name: h.summary for h in suite.held_matched}
    for h in suite.held:
        m = held_m.get(h.name)
        print(f"| held-out {h.name} (leave-one-persona-out) | - | {h.summary.accuracy_text()} | "
              f"{h.summary.auroc_text()} | " + (f"{m.accuracy:.2f} / {m.auroc:.2f}" if m else "-") + " |")
    if matched is not None:
        kept = [len(v) for v in matched.pair_prompts.values()]
        print(f"\nconfidence-matched prompts per pair: {min(kept)}-{max(kept)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
