"""The audit's one offline HTML page: the verdict, each detector's vote with its gap and interval, the baselines
beside them, and (with a reference ensemble) its reliability diagram. Plain HTML and inline SVG: no script."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.verdict{font-size:1.4em;padding:.6em;border-radius:6px;
background:#f4f4f4}.none{color:#888}caption{text-align:left;font-weight:bold}"""


def _num(x: Any, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _reliability(reference: dict[str, Any]) -> str:
    """Inline SVG: mean predicted probability against observed frequency per bin (held-out predictions)."""
    bins = reference.get("reliability") or []
    if not bins:
        return "<p>The reference ensemble stores no reliability bins.</p>"
    size, pad = 240, 30
    pts = " ".join(f"{pad + b['predicted'] * size:.1f},{pad + (1 - b['observed']) * size:.1f}" for b in bins)
    dots = "".join(f'<circle cx="{pad + b["predicted"] * size:.1f}" cy="{pad + (1 - b["observed"]) * size:.1f}" '
                   f'r="{2 + math.sqrt(b.get("n", 1)):.1f}" fill="#1f77b4"/>' for b in bins)
    return (f'<svg width="{size + 2 * pad}" height="{size + 2 * pad}" role="img" aria-label="reliability diagram">'
            f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#bbb" stroke-dasharray="4"/>'
            f'<polyline points="{pts}" fill="none" stroke="#1f77b4"/>{dots}'
            f'<text x="{pad}" y="{size + 2 * pad - 5}" font-size="11">predicted p(faker)</text>'
            f'<text x="2" y="{pad - 8}" font-size="11">observed</text></svg>')


def _held_out(reference: dict[str, Any]) -> str:
    """The reference's replay of the rule on held-out pairs: what audit is expected to do on a new pair."""
    replay = reference.get("held_out") or {}
    if not replay:
        return ""
    what = {"labelled": "an aligned model and a faker", "aligned": "two aligned models", "faker": "two fakers"}
    rows = "".join(
        f"<tr><td>{_e(what.get(k, k))}</td><td>{h['n']}</td><td>{h['decided']} ({h['share_decided']:.0%})</td>"
        f"<td>{_num(h.get('accuracy_of_decided'), 2) if k == 'labelled' else 'every one is wrong'}</td></tr>"
        for k, h in replay.items())
    return ("<table><caption>The rule replayed on held-out reference pairs (leave-one-persona-out): how often audit "
            "gives a verdict, and how often it is right</caption><tr><th>pair of</th><th>pairs</th><th>verdicts"
            f"</th><th>accuracy of the verdicts</th></tr>{rows}</table>")


def write_audit_page(record: dict[str, Any], path: Path) -> Path:
    """Write the page for a verdict record (`verdict.json`'s content)."""
    models = record["models"]
    faker = record["faker"]
    p = record.get("probability_b")
    head = (f"Verdict: <b>{_e(faker)}</b> is the alignment faker" if faker else
            '<span class="none">No decision</span>')
    rows = []
    for v in record["votes"]:
        acc = v.get("reference_accuracy")
        ci = v.get("reference_ci")
        rows.append(f"<tr><td>{_e(v['detector'])}{' (baseline)' if v['baseline'] else ''}</td><td>{_e(v['score'])}"
                    f"</td><td>{_e(v['setting'])}</td><td>{_num(v['score_a'])}</td><td>{_num(v['score_b'])}</td>"
                    f"<td>{_num(v['gap'])}</td><td>[{_num(v['interval'][0])}, {_num(v['interval'][1])}]</td>"
                    f"<td>{_num(v.get('band'))}</td><td>{_e(v['vote'] or 'abstains')}</td><td>{_num(acc, 2)}"
                    f"{f' [{_num(ci[0], 2)}, {_num(ci[1], 2)}]' if ci else ''}</td></tr>")
    skipped = "".join(f"<li>{_e(k)}: {_e(w)}</li>" for k, w in record.get("skipped", {}).items())
    reference = record.get("reference")
    ref = (f"<h2>Reference ensemble</h2><p>{_e(reference.get('description', ''))}</p>{_held_out(reference)}"
           f"{_reliability(reference)}"
           if reference else "<h2>Reference ensemble</h2><p>None shipped: without it, how far two models of the same "
           "kind differ on each detector is unknown, so votes are shown on their intervals alone and no verdict is "
           "given.</p>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>poser_interp audit</title>
<style>{STYLE}</style></head><body><h1>Audit</h1>
<p>A = {_e(models['A'])}<br>B = {_e(models['B'])}</p>
<p class="verdict">{head}{f' (p(B is the faker) = {p:.2f})' if p is not None else ''}</p>
<p>{_e(record['reason'])}. Prompts: {record['n_prompts']} on which both act aligned ({record['n_dropped']} dropped).</p>
<table><caption>Votes (gap = score(B) - score(A); a vote needs its 95% bootstrap interval to exclude 0 and |gap| to
exceed the same-kind band: how far two aligned models, or two fakers, differ on the detector)</caption>
<tr><th>detector</th><th>score</th><th>setting</th><th>A</th><th>B</th><th>gap</th><th>95% interval</th>
<th>same-kind band</th><th>vote</th>
<th>reference accuracy</th></tr>{''.join(rows)}</table>
{f'<p>Not run on this pair:</p><ul>{skipped}</ul>' if skipped else ''}{ref}</body></html>"""
    path.write_text(page)
    return path
