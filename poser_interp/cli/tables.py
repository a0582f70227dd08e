"""The result tables `detect` and `report` print: accuracy and AUROC with CIs, fitted to 80 columns or more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from ..strategies.registry import baseline_names
from .common import compact_table, console, plural, print_table, width


def results_table(title: str, compute: bool) -> Table:
    """strategy, setting, score, accuracy and AUROC with CIs, decided (and compute time): fits 80 columns."""
    table = compact_table(title)
    narrow = width() < 110  # intervals go below their value
    for col in ("strategy", "setting"):
        table.add_column(col, overflow="fold", min_width=8)
    table.add_column("score", no_wrap=True)
    for col in ("accuracy", "AUROC"):
        table.add_column(f"{col}\n(95% CI)" if narrow else f"{col} (95% CI)", no_wrap=True)
    table.add_column("decided", no_wrap=True)
    if compute:
        table.add_column("time", no_wrap=True, justify="right")
    return table


def metric_cells(r: Any) -> tuple[str, str, str]:
    m = r.summary
    sep = "\n" if width() < 110 else " "
    acc, auc = (t.replace(" (", f"{sep}(") if t != "nan" else "[red]NaN[/]" for t in (m.accuracy_text(),
                                                                                      m.auroc_text()))
    return acc, auc, f"{m.n_decided}/{m.n_pairs}"


def short_setting(setting: Any) -> str:
    """'L4 x1.0' for a noise setting; 'k=v, k=v' otherwise (wraps between pairs); '-' when empty."""
    d = setting.as_dict()
    if set(d) == {"layer", "scale"}:
        return f"L{d['layer']} x{d['scale']}"
    return setting.key.replace(",", ", ")


def detect_table(ev: Any, root: Path, n_pairs: int, subtitle: str = "") -> None:
    table = results_table(f"detection on {root}: {plural(n_pairs, 'pair')} (* = the strategy's chosen score, "
                           "fixed in advance; accuracy CIs resample models, since pairs share them)"
                           + (f"\n{subtitle}" if subtitle else ""), compute=True)
    notes = []
    for name in ev.strategies():
        primary = ev.primary(name)
        for r in ev.find(name, setting=primary.setting):
            table.add_row(name, short_setting(r.setting), r.score + (" *" if r.is_primary else ""), *metric_cells(r),
                          f"{ev.seconds(name):.0f} s" if r.is_primary else "")
            if r.summary.describe_nan():
                notes.append(f"{name} {r.score}: {r.summary.describe_nan()}")
        if len({r.setting.key for r in ev.find(name)}) > 1:
            best = max(ev.find(name, primary.score), key=lambda r: (r.summary.accuracy == r.summary.accuracy,
                                                                     r.summary.accuracy))
            table.add_row(name, f"{short_setting(best.setting)} (best: optimistic)", best.score, *metric_cells(best),
                          "")
    print_table(table)
    base = {n: ev.primary(n).summary.accuracy for n in baseline_names() if n in ev.strategies()}
    for name in ev.strategies():
        if name not in base and base:
            acc = ev.primary(name).summary.accuracy
            console.print(f"{name} ({ev.primary(name).score}): accuracy {acc:.2f} vs " +
                          ", ".join(f"{b} {a:.2f}" for b, a in base.items()))
    for note in notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


def matched_counts(ev: Any, match: Any) -> list[int]:
    """Matched prompts kept per pair, sorted; [] (having said so once, not as a table of NaN) when no pair has any."""
    kept = sorted(len(ids) for ids in ev.pair_prompts.values())
    if any(kept):
        return kept
    console.print(f"[yellow]confidence-matched: no pair has {match.min_prompts} prompts whose clean margins are "
                  f"within {match.tol:g} logit[/]; nothing to evaluate. More prompts per pair (--max-prompts, 0 = "
                  "all) or a larger tolerance give the matched set room.")
    return []
