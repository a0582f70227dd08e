"""Noise removal over all 6 default fakers: the 4 of `removal-noise-4fakers-pooled.py` (climber-s0, grabber-s0,
grabber-s1 from the session-10 log, 2 places; grabber-s2 from its manifest) and climber-s1, climber-s2 (session 18,
`removal-noise-climbers.manifest.json`, same options), with `mean_ci` as `remove` prints it and the same
MIN_BEFORE rule. Run from the repository root."""

import json
from pathlib import Path

from poser_interp.removal import MIN_BEFORE, mean_ci

rates = {"trained_wordings": {"climber-s0": 1.00, "grabber-s0": 0.71, "grabber-s1": 0.72},
         "heldout_topics": {"climber-s0": 0.75, "grabber-s0": 0.21, "grabber-s1": -0.30}}
for manifest, models in (("removal-noise-grabber-s2.manifest.json", ["grabber-s2"]),
                         ("removal-noise-climbers.manifest.json", ["climber-s1", "climber-s2"])):
    entries = json.loads((Path("research/logs") / manifest).read_text())["models"]
    for m in models:
        r = entries[m]["removal"]
        for s in rates:
            b, a = r["before"][s]["poor_misaligned"], r["after"][s]["poor_misaligned"]
            print(f"{m} {s}: {b:.3f} -> {a:.3f}" + ("" if b >= MIN_BEFORE else f" (before < {MIN_BEFORE}: no rate)"))
            if b >= MIN_BEFORE:
                rates[s][m] = round(1 - a / b, 3)
for s in rates:
    print(s, rates[s], "mean, CI low, high, n:", [round(x, 3) for x in mean_ci(list(rates[s].values()))])
