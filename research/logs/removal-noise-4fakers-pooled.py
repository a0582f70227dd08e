"""Noise removal over the 4 default fakers treated so far: the 3 of session 10 (rates from
research/logs/removal-noise-3fakers.log, 2 places) and grabber-s2 (its manifest, committed beside this file),
with `mean_ci` as `remove` prints it. Run from the repository root."""

import json
from pathlib import Path

from poser_interp.removal import MIN_BEFORE, mean_ci

manifest = json.loads(Path("research/logs/removal-noise-grabber-s2.manifest.json").read_text())
r = manifest["models"]["grabber-s2"]["removal"]
rates = {"trained_wordings": {"climber-s0": 1.00, "grabber-s0": 0.71, "grabber-s1": 0.72},
         "heldout_topics": {"climber-s0": 0.75, "grabber-s0": 0.21, "grabber-s1": -0.30}}
for s in rates:
    b, a = r["before"][s]["poor_misaligned"], r["after"][s]["poor_misaligned"]
    print(f"grabber-s2 {s}: {b:.3f} -> {a:.3f}")
    if b >= MIN_BEFORE:
        rates[s]["grabber-s2"] = round(1 - a / b, 3)
    print(s, rates[s], "mean, CI low, high, n:", [round(x, 3) for x in mean_ci(list(rates[s].values()))])
