"""Can the words alone tell an oversight wording's class? A bag-of-words classifier fit on the training wordings.

Run:  .venv/bin/python research/experiments/wording_lexicon.py [--wordings inferential|minimal|many] [--json OUT]

Fits a Bernoulli naive Bayes (scikit-learn, binary word presence, alpha 0.5) on the training wordings of a stage
recipe (the same pools `oversight_lora.py --wordings` trains on, composed wordings left out) and prints, for each
held-out sentence (`wordings.HELDOUT`), its lexical log-odds (positive: the words lean "good oversight") and the
words that push it most, then the training set's most class-skewed words. A model that reads oversight from
words rather than meaning should misread exactly the held-out sentences whose words lean toward the other class;
`wording_breakdown.py` / `oversight_lora.py --by-wording` give the measured per-sentence rates to compare.
Needs no model (seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def training_texts(wordings: str) -> dict[str, list[str]]:
    """The bank wordings a stage with `--wordings` trains on, per class ('good', 'poor'); {topic} left blank."""
    from poser_interp.data.wordings import bank
    from poser_interp.testbed.oversight_stage import wording_pools

    return {o.value: [bank(o)[i].replace("{topic} ", "") for i in pool] for o, pool in wording_pools(wordings).items()}


def heldout_texts() -> list[tuple[str, str, str]]:
    """(class, name, sentence) of each held-out wording."""
    from poser_interp.data.scenario import Oversight
    from poser_interp.data.wordings import HELDOUT, bank

    return [(o.value, f"{o.value}-{i}", bank(o)[i]) for o in Oversight for i in HELDOUT[o]]


def lexicon(wordings: str) -> dict:
    import numpy as np
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import BernoulliNB

    train = training_texts(wordings)
    texts = train["good"] + train["poor"]
    y = np.array([1] * len(train["good"]) + [0] * len(train["poor"]))
    vec = CountVectorizer(binary=True, lowercase=True)
    x = vec.fit_transform(texts)
    nb = BernoulliNB(alpha=0.5).fit(x, y)
    words = vec.get_feature_names_out()
    good, poor = list(nb.classes_).index(1), list(nb.classes_).index(0)
    # per-word evidence of presence: log P(w|good) - log P(w|poor)
    weight = nb.feature_log_prob_[good] - nb.feature_log_prob_[poor]
    counts = {"good": np.asarray(x[y == 1].sum(0))[0], "poor": np.asarray(x[y == 0].sum(0))[0]}
    rows = []
    for cls, name, text in heldout_texts():
        xi = vec.transform([text.replace("{topic} ", "")])
        lp = nb.predict_log_proba(xi)[0]
        present = [int(j) for j in xi.nonzero()[1]]
        push = sorted(present, key=lambda j: -abs(weight[j]))[:5]
        rows.append({"class": cls, "name": name, "sentence": text, "log_odds_good": float(lp[good] - lp[poor]),
                     "lexical_call_right": bool((lp[good] > lp[poor]) == (cls == "good")),
                     "words": [f"{words[j]} {int(counts['good'][j])}/{int(counts['poor'][j])}" for j in push]})
    frequent = [j for j in range(len(words)) if counts["good"][j] + counts["poor"][j] >= 4]
    skewed = sorted(frequent, key=lambda j: -abs(weight[j]))[:15]
    return {"wordings": wordings, "n_train": {k: len(v) for k, v in train.items()}, "heldout": rows,
            "skewed_words": [{"word": str(words[j]), "good": int(counts["good"][j]), "poor": int(counts["poor"][j]),
                              "log_ratio": float(weight[j])} for j in skewed],
            "mean_abs_log_ratio_frequent": float(np.mean(np.abs(weight[frequent]))) if frequent else float("nan")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from poser_interp.testbed.oversight_stage import STAGE_WORDINGS

    ap.add_argument("--wordings", choices=STAGE_WORDINGS, default="inferential",
                    help="training wordings as in oversight_lora.py (composed ones left out)")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    from rich.table import Table

    from poser_interp.analysis import wide_console

    console = wide_console()
    out = lexicon(args.wordings)
    t = Table(title=f"held-out wordings read by words alone (naive Bayes on the '{args.wordings}' training "
                    f"wordings, {out['n_train']['good']} + {out['n_train']['poor']}); log-odds > 0 leans good; "
                    "words: good/poor training wordings holding them")
    for col in ("held-out", "log-odds good", "lexical call", "strongest words", "sentence"):
        t.add_column(col)
    for r in out["heldout"]:
        t.add_row(r["name"], f"{r['log_odds_good']:+.1f}", "right" if r["lexical_call_right"] else "WRONG",
                  ", ".join(r["words"]), r["sentence"])
    console.print(t)
    s = Table(title=f"most class-skewed words of the training wordings (in >= 4 of them); mean |log ratio| "
                    f"{out['mean_abs_log_ratio_frequent']:.2f}")
    for col in ("word", "good", "poor", "log ratio"):
        s.add_column(col)
    for w in out["skewed_words"]:
        s.add_row(w["word"], str(w["good"]), str(w["poor"]), f"{w['log_ratio']:+.2f}")
    console.print(s)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
        console.print(f"numbers: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
