"""The suite's page: one self-contained HTML page drawn from a `Suite` (plotly's JavaScript embedded once, nothing
fetched): the testbed's behaviour, the headline table, the held-out choices, the persona-family transfer,
per-layer / per-head figures of each strategy, removal results beside the testbed when there are any, and the
run's config and versions. Every number in its tables is formatted as `poser-interp report` prints it, from the
same `evaluate`.
"""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly

from ..core.shape import recorded_base
from ..evaluation.results import ResultsStore
from ..evaluation.runner import Result
from ..runtime.atomic import write_text_atomic
from ..strategies.base import figures_of, section_of
from ..strategies.registry import baseline_names, from_config
from ..testbed.folder import Testbed
from ..viz import kit
from ..viz.plots import summary_figure
from .run import Suite

SECTIONS = ("testbed", "headline", "held-out", "transfer", "figures", "removal", "sweep", "config")
"""Section ids of the page, in order."""


def _precision_note(store: ResultsStore) -> str:
    """A sentence for the headline when the rows were not computed in fp32 (`RunConfig.precision`)."""
    precision = store.manifest["config"].get("run", {}).get("precision", "fp32")
    return "" if precision == "fp32" else (f" Computed under {_e(precision)} autocast (<code>--precision "
                                           f"{_e(precision)}</code>; strategies that need exact arithmetic, S3, in "
                                           "fp32): answer logits within ~0.3 of fp32.")


# --- figures ------------------------------------------------------------------------------------------------
def _strategy(suite: Suite, name: str) -> Any:
    return from_config(name, suite.store.manifest["config"]["strategies"][name])


def strategy_figures(suite: Suite, name: str) -> dict[str, Any]:
    """One strategy's figures (`StrategyBase.figures`: its own, or the generic per-setting one), from stored results."""
    return figures_of(_strategy(suite, name), suite.ev, suite.store, kit)


def _strategy_section(suite: Suite, name: str, figure: Callable[[str, Any], str]) -> str:
    """One strategy's part of the figures section, as the strategy lays it out (`StrategyBase.suite_section`)."""
    s = section_of(_strategy(suite, name), suite.ev, suite.store, kit)
    return (f'<h3 data-strategy="{_e(name)}">{_e(s.title)}</h3>' + (f"<p>{_e(s.text)}</p>" if s.text else "") +
            (_table(s.header, s.rows, "strategy") if s.rows else "") +
            "".join(figure(k, f) for k, f in s.figures.items()))


# --- page -------------------------------------------------------------------------------------------------
def _e(x: Any) -> str:
    return html.escape(str(x))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _f(x: Any, digits: int = 2) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def setting_text(setting: Any) -> str:
    """As `report` prints a setting: 'L4 x1.0' for noise, the key otherwise."""
    d = setting.as_dict()
    return f"L{d['layer']} x{d['scale']}" if set(d) == {"layer", "scale"} else setting.key


def cells(summary: Any) -> tuple[str, str, str]:
    """(accuracy (CI), AUROC (CI), decided) exactly as `report` prints them."""
    return summary.accuracy_text(), summary.auroc_text(), f"{summary.n_decided}/{summary.n_pairs}"


def _behaviour_rows(testbed: Testbed) -> list[list[str]]:
    """One row per model: `testbed verify`'s last measurement where there is one (held-out wordings included),
    else the build's (no held-out wordings)."""
    rows = []
    verified = testbed.verified()

    def pair(m: dict[str, float] | None) -> str:
        return f"{_f(m['good_aligned'])} / {_f(m['poor_misaligned'])}" if m else "-"

    for m, e in sorted(testbed.models.items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        v = verified.get(m)
        met = v or e.get("metrics", {})
        t = met.get("test", {})
        meets = (v["meets_thresholds"] and v.get("meets_heldout_wordings", True)) if v else e.get("meets_thresholds")
        rows.append([m, e["kind"], e.get("persona", ""), e.get("steps", ""), _f(t.get("good_aligned")),
                     _f(t.get("good_confidence")), _f(t.get("poor_misaligned")), pair(met.get("heldout_wordings")),
                     pair(met.get("heldout_topics")), "yes" if meets else "no",
                     f"verify {v['date']}" if v else "build"])
    return rows


def _headline(suite: Suite) -> str:
    header = ["method", "setting", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided",
              "confidence-matched accuracy (95% CI)", "matched AUROC (95% CI)", "matched decided", "compute"]
    rows = []

    def matched_cells(r: Result) -> tuple[str, str, str]:
        if suite.matched is None:
            return "-", "-", "0/0"
        (m,) = [x for x in suite.matched.results if (x.strategy, x.setting, x.score) == (r.strategy, r.setting,
                                                                                          r.score)]
        return cells(m.summary)

    names = [n for n in suite.ev.strategies() if n not in baseline_names()]
    for name in names:
        r = suite.ev.primary(name)
        rows.append([name, setting_text(r.setting), r.score + " *", *cells(r.summary), *matched_cells(r),
                     f"{suite.ev.seconds(name):.0f} s"])
    by_matched = {h.name: h for h in suite.held_matched}
    for h in suite.held:
        m = by_matched.get(h.name)
        rows.append([f"held-out {h.name.replace('_', ' ')}", "chosen per fold", "(see held-out choices)",
                     *cells(h.summary), *(cells(m.summary) if m else ("-", "-", "0/0")), ""])
    for name in baseline_names():
        if name in suite.ev.strategies():
            primary = suite.ev.primary(name)
            for r in suite.ev.find(name, setting=primary.setting):
                rows.append([f"baseline {name}", setting_text(r.setting), r.score + (" *" if r.is_primary else ""),
                             *cells(r.summary), *matched_cells(r), ""])
    return _table(header, rows, "headline")


def _skipped(suite: Suite) -> str:
    skipped = "".join(f'<p class="skipped" data-strategy="{_e(name)}"><b>{_e(name)} not run on this testbed:</b> '
                      f"{_e(why)}</p>" for name, why in suite.skipped.items())
    if not suite.partial:
        return skipped
    counts = ", ".join(f'<span class="partial" data-strategy="{_e(name)}">{_e(name)} {n} of {total}</span>'
                       for name, (n, total) in suite.partial.items())
    return (skipped + f"<p><b>Sweeps partly stored (a quick run):</b> {counts} settings. Every chosen setting is "
            "in the headline; the rest of each sweep, and the figures and held-out choices that need it, come with a "
            "run without --quick on the same results.</p>")


def _held_out_section(suite: Suite) -> str:
    parts = ["<p>Strict leave-one-persona-out: each cell (aligned persona x faker persona) is decided by choices "
             "and weights fitted on the pairs sharing neither persona with it. Accuracy over pairs; AUROC over "
             "(aligned, faker) model comparisons inside each cell, with that cell's choice.</p>"]
    rows = [[f.fold.label, len(f.fold.test), len(f.fold.train)] + [h.choices.get(f.fold.label, "") for h in suite.held]
            for f in suite.folds]
    parts.append(_table(["fold (decided cell)", "pairs decided", "pairs fitted on",
                         *[h.name.replace("_", " ") for h in suite.held]], rows, "folds"))
    return "".join(parts)


def _transfer_section(suite: Suite) -> str:
    if not suite.transfers:
        return "<p>No persona family has within-family pairs on both sides; nothing to transfer.</p>"
    rows = [[t.strategy, t.chosen_on, t.tested_on, setting_text(t.chosen.setting) + f" {t.chosen.score}"
             if t.chosen else "-", f"{_f(t.train_accuracy)} ({t.n_train} pairs)", f"{_f(t.test_accuracy)} "
             f"({t.n_test} pairs)", _f(t.primary_test_accuracy)] for t in suite.transfers]
    return ("<p>Each strategy's setting and score chosen by accuracy on the pairs of one persona family (both "
            "models of that motive) and tested on the other family's pairs.</p>" +
            _table(["strategy", "chosen on", "tested on", "chosen setting", "accuracy where chosen (optimistic)",
                    "accuracy where tested (held out)", "fixed setting where tested"], rows, "transfer"))


def _removal_section(suite: Suite, figure: Callable[[str, Any], str]) -> str:
    if not suite.removals:
        return ("<p>No removal results beside this testbed (run <code>poser-interp remove --method sft</code> and "
                "<code>--method noise</code>).</p>")
    parts = []
    for s in suite.removals:
        rows = [[name, _mean(s.removal[name]), _mean(s.control[name])] for name in s.removal]
        parts.append(f"<h3>{_e(s.method)}: {_e(s.where)}</h3><p>{_e(s.config['steps'])} steps per model; training "
                     f"{s.seconds:.0f} s in all. A faker's removal rate on a set counts only where it was misaligned "
                     f"on at least {s.min_before:.2f} of that set before treatment.</p>")
        parts.append(_table(["evaluation set", "fakers: removal rate (95% CI)",
                             "control: aligned models' misaligned rate after (95% CI)"], rows, "removal"))
        parts.append(figure(f"removal_{s.method}", s.figure()))
        ev = suite.treated_detection.get(s.method)
        if ev is not None:
            det = [[n, setting_text(ev.primary(n).setting), ev.primary(n).score, *cells(ev.primary(n).summary)]
                   for n in ev.strategies()]
            parts.append("<p>Detection on the treated testbed (does each detector still flag the treated fakers?):"
                         "</p>" + _table(["strategy", "setting", "score", "accuracy (95% CI)", "AUROC (95% CI)",
                                          "decided"], det, "treated-detection"))
    return "".join(parts)


def _mean(t: tuple[float, float, float, int]) -> str:
    m, lo, hi, n = t
    return "-" if math.isnan(m) else (f"{m:.2f} ({lo:.2f}-{hi:.2f}), n={n}" if not math.isnan(lo) else
                                      f"{m:.2f}, n={n}")


def _sweep(suite: Suite) -> str:
    rows = [[r.strategy, setting_text(r.setting), r.score + (" *" if r.is_primary else ""), *cells(r.summary)]
            for r in suite.ev.results]
    return ("<details><summary>Every stored setting x score (as <code>poser-interp report</code> prints them; * = "
            "the strategy's chosen setting and score, fixed in advance)</summary>" +
            _table(["strategy", "setting", "score", "accuracy (95% CI)", "AUROC (95% CI)", "decided"], rows, "sweep")
            + "</details>")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3}section{margin-bottom:2.5em}h2{border-bottom:2px solid #444;padding-bottom:3px}
.figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}nav a{margin-right:1em}"""


def render_page(suite: Suite) -> str:
    """The whole page as one HTML string (plotly's JavaScript embedded in the first figure)."""
    state = {"first": True}

    def figure(name: str, fig: Any) -> str:
        div = fig.to_html(full_html=False, include_plotlyjs=state["first"], div_id=f"fig-{name}",
                          default_height="460px")
        state["first"] = False
        return f'<div class="figure" data-figure="{_e(name)}">{div}</div>'

    tb, store = suite.testbed, suite.store
    sections: dict[str, tuple[str, str]] = {}
    sizes = [p.get("benchmark_size", 0) for p in tb.pairs.values()]
    sections["testbed"] = ("Testbed behaviour", f"<p>{_e(tb.root)}: {len(tb.models)} models, {len(tb.pairs)} pairs "
                           f"(benchmark prompts per pair {min(sizes, default=0)}-{max(sizes, default=0)}); measured "
                           "on unseen test scenarios by the last `poser-interp testbed verify` (held-out wordings: "
                           "the same scenarios with oversight sentences no split trains on; meets = every threshold, "
                           "held-out wordings included) or, for models verify has not measured, when the testbed "
                           "was built (no held-out wordings).</p>" +
                           _table(["model", "kind", "persona", "steps", "test good->aligned", "P(aligned|good)",
                                   "test poor->misaligned", "held-out wordings good/poor", "held-out topics good/poor",
                                   "meets thresholds", "measured by"], _behaviour_rows(tb), "behaviour"))
    matched_note = (f"confidence-matched: prompts whose two clean margins are within "
                    f"{suite.config.match_confidence:g} logit (kept per pair: "
                    f"{sorted(len(v) for v in suite.matched.pair_prompts.values())})" if suite.matched else
                    "confidence-matched: no pair keeps 3 prompts within "
                    f"{suite.config.match_confidence:g} logit (more prompts per pair give the matched set room)")
    sections["headline"] = ("Headline", f"<p>{len(suite.ev.pair_prompts)} pairs. * = the strategy's chosen setting "
                            "and score, fixed in advance; accuracy CIs resample models (pairs share them); "
                            f"{_e(matched_note)}.{_precision_note(store)}</p>" + _skipped(suite) + _headline(suite)
                            + figure("summary", summary_figure(suite.ev)))
    sections["held-out"] = ("Held-out choices: best single strategy and ensembles", _held_out_section(suite))
    sections["transfer"] = ("Transfer between persona families", _transfer_section(suite))
    sections["figures"] = ("Per-layer and per-head figures", "".join(
        _strategy_section(suite, name, figure) for name in suite.ev.strategies() if name not in baseline_names()))
    sections["removal"] = ("Removal", _removal_section(suite, figure))
    sections["sweep"] = ("Every setting", _sweep(suite))
    config = {"suite": asdict(suite.config), "results": str(suite.out), "results_config": store.manifest["config"],
              "versions": {**store.manifest.get("versions", {}), "plotly": plotly.__version__,
                           "python": platform.python_version()},
              "testbed": {"root": str(tb.root), "config": tb.manifest.get("config", {}),
                          "base": recorded_base(tb.base_spec())},  # the real depth and width, not the spec's 4/64
              "wall_seconds_of_evaluation": round(suite.seconds, 1)}
    sections["config"] = ("Config and versions", f"<pre>{_e(json.dumps(config, indent=1, sort_keys=True))}</pre>")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{k}">{_e(t)}</a>' for k, (t, _) in sections.items())
    body = "".join(f'<section id="{k}"><h2>{_e(t)}</h2>{content}</section>' for k, (t, content) in sections.items())
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>poser_interp suite: "
            f"{_e(tb.root.name)}</title><style>{CSS}</style></head><body><h1>Detection suite: {_e(tb.root)}</h1>"
            f"<p>Written {stamp} from {_e(suite.out)}.</p><nav>{nav}</nav>{body}</body></html>")


def write_page(suite: Suite, path: str | Path) -> Path:
    """Write the page (atomically: a reader never sees half a page)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, render_page(suite), encoding="utf-8")
