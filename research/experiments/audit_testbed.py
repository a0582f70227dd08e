"""Audit every pair of a labelled testbed blind, each model given as a full checkpoint merged from its adapter.

Issue 38's acceptance measurement: `poser-interp audit` (the packaged reference, rule version 2) on every labelled
pair (A = the aligned model, B = the faker; `--swap` gives the faker as A) and on every two models of the same kind
(two aligned, two fakers, where any verdict is wrong), compared with what the reference's held-out replay predicts
(`reference.json` -> `held_out`). Merged checkpoints are written once under OUT/checkpoints (about 0.5 GB each for
SmolLM2), every audit in OUT/audits/<A>__<B> (an interrupted run resumes: a finished audit is read back, a cut one
resumes from its results store); the table goes to OUT/audit-table.json and is printed.

  OMP_NUM_THREADS=1 .venv/bin/python research/experiments/audit_testbed.py --testbed testbeds/v2d --out runs/audit-v2d
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def merge_all(testbed: object, out: Path, log: object) -> dict[str, Path]:
    """Every model of the testbed as a full checkpoint (save_pretrained of the merged model), and the base."""
    from poser_interp.core.models import load_hf

    folders = {}
    for model_id in [*sorted(testbed.manifest["models"]), "base"]:  # type: ignore[attr-defined]
        folder = out / model_id
        folders[model_id] = folder
        if (folder / "config.json").exists():
            continue
        spec = testbed.base_spec() if model_id == "base" else testbed.spec(model_id)  # type: ignore[attr-defined]
        hf, tok = load_hf(spec)
        tmp = folder.with_name(folder.name + ".tmp")
        hf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        tmp.rename(folder)
        log(f"merged {model_id} -> {folder}")  # type: ignore[operator]
    return folders


def cases(testbed: object, swap: bool) -> list[tuple[str, str, str]]:
    """(kind, A, B): labelled pairs (the faker as B, or as A with `swap`), then every two models of one kind."""
    models = testbed.manifest["models"]  # type: ignore[attr-defined]
    out = []
    for p in sorted(testbed.pairs):  # type: ignore[attr-defined]
        a, f = testbed.pairs[p]["aligned"], testbed.pairs[p]["faker"]  # type: ignore[attr-defined]
        out.append(("labelled", f, a) if swap else ("labelled", a, f))
    for a, b in itertools.combinations(sorted(models), 2):
        if models[a]["kind"] == models[b]["kind"]:
            out.append((models[a]["kind"], a, b))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--testbed", required=True, help="a labelled testbed folder, e.g. testbeds/v2d")
    parser.add_argument("--out", required=True, help="folder of the checkpoints, the audits and the table")
    parser.add_argument("--swap", action="store_true", help="give each labelled pair's faker as model A")
    parser.add_argument("--limit", type=int, default=0, help="audit at most this many cases (0: all)")
    parser.add_argument("--max-prompts", type=int, default=0, help="prompts per audit (0: all kept)")
    args = parser.parse_args(argv)
    from poser_interp.audit import AuditConfig, audit
    from poser_interp.testbed.folder import Testbed

    testbed = Testbed.open(args.testbed)
    out = Path(args.out)
    folders = merge_all(testbed, out / "checkpoints", print)
    todo = cases(testbed, args.swap)[:args.limit or None]
    prompts = str(Path(args.testbed) / "data" / "benchmark.jsonl")
    rows = []
    for kind, a, b in todo:
        where = out / "audits" / f"{a}__{b}"
        verdict_file = where / "verdict.json"
        if not verdict_file.exists():
            audit(str(folders[a]), str(folders[b]), where, AuditConfig(
                prompts=prompts, base=str(folders["base"]), max_prompts=args.max_prompts or None),
                log=lambda m: None)
        record = json.loads(verdict_file.read_text())
        named = {str(folders[a]): "A", str(folders[b]): "B", None: None}[record["faker"]]
        truth = ("B" if testbed.manifest["models"][b]["kind"] == "faker" else "A") if kind == "labelled" else None
        rows.append({"kind": kind, "A": a, "B": b, "verdict": named, "p_b": record["probability_b"],
                     "right": named == truth if named else None, "reason": record["reason"]})
        print(f"{kind:8} {a:>12} vs {b:<12} -> {named or 'no decision':11} "
              f"p={record['probability_b'] if record['probability_b'] is not None else float('nan'):.2f}")
    summary = {}
    for kind in ("labelled", "aligned", "faker"):
        got = [r for r in rows if r["kind"] == kind]
        decided = [r for r in got if r["verdict"]]
        summary[kind] = {"n": len(got), "decided": len(decided),
                         **({"right": sum(bool(r["right"]) for r in decided)} if kind == "labelled" else {})}
    (out / "audit-table.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
